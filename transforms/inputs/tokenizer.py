"""LongCLIP's text tokenizer: OpenAI's CLIP BPE at LongCLIP's 248-token context.

open_clip ships the same BPE merges, but its tokenizer differs from the one LongCLIP uses in two
edge cases (whitespace regex, literal special tokens), so the encoding is reimplemented here to
match LongCLIP's `simple_tokenizer.py` exactly, and truncation is reported instead of hidden.
Only the merges file is taken from the open_clip package, without importing it (that would import
torch and torchvision: seconds a job's start need not spend).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
from collections import OrderedDict
from typing import NamedTuple, Optional

import ftfy
import regex

LONGCLIP_CONTEXT_LENGTH = 248
SOT_ID = 49406
EOT_ID = 49407

_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_TOKEN_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def merges_file() -> str:
    """OpenAI's BPE merges, as the open_clip package ships them (`bpe_simple_vocab_16e6.txt.gz`)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip_torch is not installed; it ships the CLIP BPE merges file")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


def basic_clean(text: str) -> str:
    """OpenAI CLIP's cleaning: ftfy, HTML entities unescaped twice, outer whitespace stripped."""
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table: printable Latin-1 bytes map to themselves,
    the other 68 bytes to characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return dict(sorted(table.items(), key=lambda item: (item[0] not in printable, item[0])))


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    """The adjacent symbol pairs of a word."""
    return set(zip(word, word[1:], strict=False))


class TokenizedText(NamedTuple):
    """Token ids `[SOT] + text + [EOT]`, unpadded, and whether the text had to be cut."""

    ids: tuple[int, ...]
    truncated: bool


class LongCLIPTokenizer:
    """Tokenizes like `longclip.tokenize(text, truncate=True)`, after collapsing whitespace.

    The BPE word cache is bounded so that memory stays flat over millions of captions.
    """

    def __init__(self, context_length: int = LONGCLIP_CONTEXT_LENGTH, cache_size: int = 200_000):
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (SOT and EOT), got {context_length}")
        self.context_length = context_length
        self._byte_encoder = bytes_to_unicode()
        with gzip.open(merges_file()) as stream:
            merges = stream.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merge_pairs = [tuple(merge.split()) for merge in merges]
        vocab = list(self._byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(pair) for pair in merge_pairs]
        vocab += list(_SPECIAL_TOKENS)
        self._encoder = {token: index for index, token in enumerate(vocab)}
        assert self._encoder[_SPECIAL_TOKENS[0]] == SOT_ID and self._encoder[_SPECIAL_TOKENS[1]] == EOT_ID
        self._bpe_ranks = {pair: rank for rank, pair in enumerate(merge_pairs)}
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, text: str) -> TokenizedText:
        room = self.context_length - 2
        body = self.encode(" ".join(text.split()), stop_after=room)
        # Same ids as LongCLIP's `tokens[:context]; tokens[-1] = EOT`.
        return TokenizedText((SOT_ID, *body[:room], EOT_ID), len(body) > room)

    def encode(self, text: str, stop_after: Optional[int] = None) -> list[int]:
        """BPE ids of `text` without SOT/EOT, cleaned as OpenAI's tokenizer cleans it.

        With `stop_after`, stops once more than that many ids exist: words are encoded one at a
        time, so the ids so far are the same, and a megabyte caption costs no more than a long one.
        """
        text = _WHITESPACE.sub(" ", basic_clean(text)).strip().lower()
        ids: list[int] = []
        for match in _TOKEN_PATTERN.finditer(text):
            if stop_after is not None and len(ids) > stop_after:
                break
            word = match.group()
            if word in _SPECIAL_TOKENS:
                ids.append(self._encoder[word])
                continue
            symbols = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self._encoder[piece] for piece in self._bpe(symbols).split(" "))
        return ids

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            self._cache.move_to_end(token)
            return cached
        merged = self._merge(token)
        self._cache[token] = merged
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return merged

    def _merge(self, token: str) -> str:
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self._bpe_ranks.get(pair, float("inf")))
            if bigram not in self._bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        return " ".join(word)
