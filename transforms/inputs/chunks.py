"""Spans of a caption that each fit the text context: sentences packed into chunks, or single sentences.

A caption past the context is scored as chunks of whole sentences (each scored exactly as a caption is), or
sentence by sentence. What fits is measured on the exact substring that will be scored, never assumed from
its parts: cleaning and BPE could count a span differently from the sum of its pieces. A sentence that does
not fit is cut between words, and a word that does not fit between characters, so every span fits and
every non-whitespace character of the caption is in exactly one span.

Cost: the caption is counted whole, each sentence once and each chunk once more (sums of sentence counts
pick a chunk's end, one count of the chunk verifies it): about three tokenizations of the caption, not a
count of every growing chunk at every sentence.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Callable

from transforms.inputs.sentences import split_sentences

if TYPE_CHECKING:
    from transforms.inputs.tokenizer import LongCLIPTokenizer

logger = logging.getLogger(__name__)

CountTokens = Callable[[str], int]
Span = tuple[int, int]
_WORD = re.compile(r"\S+")


def token_counter(tokenizer: LongCLIPTokenizer, room: int) -> CountTokens:
    """`count_tokens` for `tokenizer`: BPE ids of a text without SOT/EOT, exact up to `room`; encoding stops
    past `room`, so a text far too long costs little more than one that just does not fit."""

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(" ".join(text.split()), stop_after=room))  # as the tokenizer's call does

    return count_tokens


def plan_chunks(text: str, count_tokens: CountTokens, room: int) -> list[Span]:
    """Spans of `text` to score as chunks: `[(0, len(text))]` when it all fits (scored as it always was),
    else its sentences packed greedily, in order, into stripped spans that each fit `room` tokens."""
    if text.isspace() or not text:
        return []
    planner = _Planner(text, count_tokens, room)
    if planner.fits((0, len(text))):
        return [(0, len(text))]
    return planner.pack(planner.sentence_pieces())


def sentence_pieces(text: str, count_tokens: CountTokens, room: int) -> list[Span]:
    """Every sentence of `text` as its own span, a sentence that does not fit `room` tokens cut into pieces
    that do (between words, else between characters)."""
    return _Planner(text, count_tokens, room).sentence_pieces()


class _Planner:
    """The spans of one text, each span counted at most once (a text that is one sentence, or a sentence
    that is one word, is not tokenized again)."""

    def __init__(self, text: str, count_tokens: CountTokens, room: int):
        self.text, self.room = text, room
        self._count_tokens = count_tokens
        self._counts: dict[Span, int] = {}

    def tokens(self, span: Span) -> int:
        count = self._counts.get(span)
        if count is None:
            count = self._counts[span] = self._count_tokens(self.text[span[0] : span[1]])
        return count

    def fits(self, span: Span) -> bool:
        return self.tokens(span) <= self.room

    def sentence_pieces(self) -> list[Span]:
        pieces = []
        for sentence in split_sentences(self.text):
            if self.fits(sentence):
                pieces.append(sentence)
            else:
                words = _WORD.finditer(self.text, *sentence)
                pieces.extend(self.pack([piece for word in words for piece in self.word_pieces(word.span())]))
        return pieces

    def word_pieces(self, word: Span) -> list[Span]:
        """The word whole if it fits, else cut into the longest prefixes that fit."""
        if self.fits(word):
            return [word]
        start, end = word
        pieces = []
        while start < end:
            pieces.append(self.longest_prefix(start, end))
            start = pieces[-1][1]
        return pieces

    def longest_prefix(self, start: int, end: int) -> Span:
        """The longest `(start, stop)` that fits, by binary search over `stop`, galloping up from `room`
        characters so that no probe is much longer than the answer (BPE of one long run of letters is
        quadratic in its length). At least one character, even one that alone does not fit (a tiny `room`)."""
        stop = start  # (start, stop) fits, verified, or is empty
        too_long = None  # the shortest stop verified not to fit, if any
        probe = min(start + max(self.room, 1), end)
        while True:
            if self.fits((start, probe)):
                stop = probe
                if stop == end:
                    break
            else:
                too_long = probe
            if too_long is None:
                probe = min(start + 2 * (stop - start), end)
            elif too_long - stop > 1:
                probe = (stop + too_long) // 2
            else:
                break
        if stop == start:
            logger.warning(
                "a character (%r) alone does not fit %d tokens; it is a span of its own", self.text[start], self.room
            )
            return (start, start + 1)
        return (start, stop)

    def pack(self, spans: list[Span]) -> list[Span]:
        """Consecutive spans (each fits, but for a lone character) packed greedily into spans from a first
        one's start to a last one's end that fit: the sum of their counts proposes the last, a count of the
        packed text verifies it (dropping spans from the end while it does not fit)."""
        packed = []
        first = 0
        while first < len(spans):
            last, total = first, self.tokens(spans[first])
            while last + 1 < len(spans) and total + self.tokens(spans[last + 1]) <= self.room:
                last += 1
                total += self.tokens(spans[last])
            while last > first and not self.fits((spans[first][0], spans[last][1])):
                last -= 1
            packed.append((spans[first][0], spans[last][1]))
            first = last + 1
        return packed
