"""The report on the parts of captions (`--long_captions chunks`, `--sentence_scores`): which sentences the image
supports least, against the rest of their own caption, and how much chunk scores spread within a caption.

A sentence's *gap* is its score minus the mean of its caption's other sentences (chunks, when the rows have no
sentence scores): negative when the image supports it less than the rest. Each caption offers its one lowest
sentence, so the page shows the sentences to delete from different captions; a global `Top` keeps the few
with the lowest gap. The spread (highest minus lowest chunk score) is a fixed-size histogram against the
caption's length in tokens. Nothing collects the rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import apache_beam as beam
import numpy as np

from pipeline.report.shown import ShownRow, for_page
from pipeline.report.text import shown_text
from transforms import ImageSettings, OutputFields

PARTS = "parts"  # the tagged output of `PartFacts`
LENGTH_BIN_TOKENS = 64  # caption lengths in bins of 64 tokens...
LENGTH_BINS = 32  # ...up to 2,048; longer captions count in the last bin
SPREAD_BINS = 50  # spreads over [0, SPREAD_MAX], the last bin holding the larger ones
SPREAD_MAX = 0.5
CONTEXT_BEFORE, CONTEXT_AFTER = 100, 200  # the caption shown around a sentence: the sentence stays in view


class PartFacts(NamedTuple):
    """What the figures need of one scored row whose caption has parts: its length, its chunks' spread
    (None with fewer than two chunks) and its least supported sentence (None with fewer than two)."""

    tokens: int
    spread: Optional[float]
    least: Optional["LeastSupported"]


class LeastSupported(NamedTuple):
    gap: float  # the sentence's score minus the mean of its caption's other sentences
    score: float
    rest: float  # that mean
    before: str  # the caption around the sentence, as shown (cut, inert)
    sentence: str
    after: str
    row: ShownRow  # the row, for its thumbnail and where it came from


def part_facts(row: dict, outputs: OutputFields, text: Any, tokens: int, shown: ShownRow) -> Optional[PartFacts]:
    """The facts of a scored row whose caption was scored in parts; None when it was not (or they are not
    well-formed lists of spans)."""
    chunks = _spans(row.get(outputs.chunks), text)
    sentences = _spans(row.get(outputs.sentences), text)
    if chunks is None and sentences is None:
        return None
    spread = None
    if chunks is not None and len(chunks) > 1:
        scores = [score for _, _, score in chunks]
        spread = max(scores) - min(scores)
    units = sentences if sentences is not None else chunks
    return PartFacts(tokens, spread, _least(units, text, shown) if len(units) > 1 else None)


def _spans(value: Any, text: Any) -> Optional[list[tuple[int, int, float]]]:
    """`[(start, end, score)]` of a list of `{start, end, score}` over `text`; None for anything else."""
    if not isinstance(value, list) or not value or not isinstance(text, str):
        return None
    spans = []
    for span in value:
        if not isinstance(span, dict):
            return None
        start, end, score = span.get("start"), span.get("end"), span.get("score")
        numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not numbers or not isinstance(score, (int, float)) or not 0 <= start < end <= len(text):
            return None
        if not 0 <= score <= 1:
            return None
        spans.append((start, end, float(score)))
    return spans


def _least(units: list[tuple[int, int, float]], text: str, shown: ShownRow) -> LeastSupported:
    total = sum(score for _, _, score in units)
    gaps = [(score - (total - score) / (len(units) - 1), index) for index, (_, _, score) in enumerate(units)]
    gap, index = min(gaps)
    start, end, score = units[index]
    before = text[max(0, start - CONTEXT_BEFORE) : start]
    after = text[end : end + CONTEXT_AFTER]
    return LeastSupported(
        gap,
        score,
        (total - score) / (len(units) - 1),
        ("…" if start > CONTEXT_BEFORE else "") + shown_text(before, CONTEXT_BEFORE),
        shown_text(text[start:end], 2 * CONTEXT_AFTER),
        shown_text(after, CONTEXT_AFTER) + ("…" if end + CONTEXT_AFTER < len(text) else ""),
        shown._replace(caption=""),  # the caption is shown around the sentence instead
    )


def length_bin(tokens: int) -> int:
    return min(tokens // LENGTH_BIN_TOKENS, LENGTH_BINS - 1)


def spread_bin(spread: float) -> int:
    return min(max(int(spread / SPREAD_MAX * SPREAD_BINS), 0), SPREAD_BINS - 1)


class _Spread(beam.CombineFn):
    """Rows with parts, and the histogram of chunk-score spread by caption length: fixed size."""

    def create_accumulator(self) -> dict:
        return {
            "rows": 0,
            "histogram": np.zeros((LENGTH_BINS, SPREAD_BINS), dtype=np.int64),
            "sum": np.zeros(LENGTH_BINS, dtype=np.float64),
        }

    def add_input(self, acc: dict, facts: PartFacts) -> dict:
        acc["rows"] += 1
        if facts.spread is not None:
            row = length_bin(facts.tokens)
            acc["histogram"][row, spread_bin(facts.spread)] += 1
            acc["sum"][row] += facts.spread
        return acc

    def merge_accumulators(self, accumulators) -> dict:
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["rows"] += acc["rows"]
            merged["histogram"] += acc["histogram"]
            merged["sum"] += acc["sum"]
        return merged

    def extract_output(self, acc: dict) -> dict:
        return {"rows": acc["rows"], "spread_by_length": acc["histogram"].tolist(), "spread_sum": acc["sum"].tolist()}


class PartStatistics(beam.PTransform):
    """`PartFacts` → one dict: the spread histogram, and the `shown` least supported sentences with thumbnails."""

    def __init__(self, images: ImageSettings, image_key: str, shown: int):
        super().__init__()
        self._images = images
        self._image_key = image_key
        self._shown = shown

    def expand(self, facts: beam.PCollection) -> beam.PCollection:
        spread = facts | "Spread" >> beam.CombineGlobally(_Spread())
        least = (
            facts
            | "Sentences" >> beam.FlatMap(lambda f: [f.least] if f.least is not None else [])
            | "LeastSupported" >> beam.combiners.Top.Of(self._shown, key=_by_gap, reverse=True)
            | "Thumbnails" >> beam.Map(_for_page, self._images, self._image_key)
        )
        return spread | "Assemble" >> beam.Map(_with_least, beam.pvalue.AsSingleton(least))


def _by_gap(least: LeastSupported) -> float:
    return least.gap


def _for_page(least: list[LeastSupported], images: ImageSettings, image_key: str) -> list[dict]:
    least = sorted(least, key=_by_gap)
    rows = for_page([item.row for item in least], images, image_key)
    return [
        {**row, "row_score": row["score"], "gap": item.gap, "score": item.score, "rest": item.rest}
        | {"before": item.before, "sentence": item.sentence, "after": item.after}
        for item, row in zip(least, rows, strict=True)
    ]


def _with_least(spread: dict, least: list) -> dict:
    return {**spread, "least_supported": least}
