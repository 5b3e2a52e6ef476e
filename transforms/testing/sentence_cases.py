"""Hand-checked sentence splits of dense captions (`sentence_cases.json`), and long captions built from them.

Each case is `(text, sentences)`: the sentences a careful reader sees, exactly as they appear in `text`,
stripped, in order. Semicolons and colons never end a sentence; a line break ends one where it ends a
heading, a list item or a paragraph, not where it only wraps a line. The four paragraphs are ShareGPT4V- and
DOCCI-style captions (150-400 words), one space between sentences, so their split is their parts by
construction. The splitter's accuracy test and `python -m bench.sentence_splitters` both score against this set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import NamedTuple


class SentenceCase(NamedTuple):
    text: str
    sentences: list[str]


_DATA = json.loads((Path(__file__).with_name("sentence_cases.json")).read_text(encoding="utf-8"))
_PARAGRAPHS = {name: SentenceCase(" ".join(parts), parts) for name, parts in _DATA["paragraphs"].items()}
STREET, CUTTING_BOARD, GALLERY, MARKET = (
    _PARAGRAPHS[name] for name in ("STREET", "CUTTING_BOARD", "GALLERY", "MARKET")
)
PARAGRAPHS = (STREET, CUTTING_BOARD, GALLERY, MARKET)
CASES: list[SentenceCase] = [
    _PARAGRAPHS[case["paragraph"]] if "paragraph" in case else SentenceCase(case["text"], case["sentences"])
    for case in _DATA["cases"]
]


def long_caption(sentences: int, seed: int = 0) -> str:
    """A realistic dense caption of `sentences` English sentences drawn from the paragraphs above in a seeded
    order: about 22 tokens a sentence, so 66 sentences are about 1,500 tokens."""
    pool = [sentence for paragraph in PARAGRAPHS for sentence in paragraph.sentences]
    rng = random.Random(seed)
    return " ".join(rng.choice(pool) for _ in range(sentences))
