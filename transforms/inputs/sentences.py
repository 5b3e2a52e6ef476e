"""Sentence spans of a caption: where captions past the context are cut into chunks, and what is scored
sentence by sentence.

The splitter is sentencex (Wikimedia's rule-based segmenter, MIT, no model to download): on the hand-checked
captions of `transforms.testing.sentence_cases` it was the most accurate of the splitters fast enough for
long captions (`python -m bench.sentence_splitters`). Its sentences are mapped back onto the text by their
non-whitespace characters, so a splitter that rewrote whitespace or dropped characters could move a
boundary but never lose or repeat a character of the caption.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import logging
import re
from typing import Sequence

import sentencex

logger = logging.getLogger(__name__)

# sentencex's English rules also end sentences at CJK full stops, ! and ?, so one language serves all captions.
LANGUAGE = "en"
# Lone surrogates (valid in a str, not in UTF-8) make the Rust extension raise; U+FFFD keeps every offset.
_SURROGATES = re.compile("[\ud800-\udfff]")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of `text` as `(start, end)` offsets into it, stripped of surrounding whitespace, in
    order; together they hold every non-whitespace character exactly once. Whitespace-only text has none."""
    if text.isspace() or not text:
        return []
    safe = _SURROGATES.sub("\ufffd", text)
    try:
        pieces = sentencex.segment(LANGUAGE, safe)
    except BaseException as error:  # a Rust panic is a BaseException; bad input must not stop the job
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        logger.warning("sentencex failed on a %d-character text (%r); it is kept as one sentence", len(text), error)
        pieces = [safe]
    return align(safe, pieces)


def align(text: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of `pieces` (a splitter's sentences of `text`, in order) in `text`, matched by non-whitespace
    characters: exactly when the pieces hold the text's, else through a diff of the two, so that boundaries
    may move but every non-whitespace character of `text` is in exactly one span."""
    solid = [index for index, character in enumerate(text) if not character.isspace()]
    if not solid:
        return []
    ours = "".join(text[index] for index in solid)
    theirs = ["".join(piece.split()) for piece in pieces]
    ends = list(itertools.accumulate(len(piece) for piece in theirs))
    if "".join(theirs) != ours:
        logger.warning("the sentence splitter changed the text's characters; its boundaries are matched by a diff")
        ends = _matched(ends, "".join(theirs), ours)
    cuts = sorted(set(ends) - {0} | {len(solid)})
    return [(solid[begin], solid[cut - 1] + 1) for begin, cut in itertools.pairwise([0, *cuts])]


def _matched(ends: list[int], theirs: str, ours: str) -> list[int]:
    """Positions in `ours` of positions `ends` in `theirs`: exact inside matching blocks; inside a differing
    block, its start in `ours` plus the offset, capped at its end (monotonic, so spans stay in order)."""
    opcodes = difflib.SequenceMatcher(None, theirs, ours, autojunk=False).get_opcodes()
    blocks = [block for block in opcodes if block[1] < block[2]]  # insertions hold no position of `theirs`
    starts = [block[1] for block in blocks]
    mapped = []
    for end in ends:
        if end >= len(theirs):
            mapped.append(len(ours))
            continue
        _, i1, _, j1, j2 = blocks[bisect.bisect_right(starts, end) - 1]
        mapped.append(j1 + min(end - i1, j2 - j1))
    return mapped
