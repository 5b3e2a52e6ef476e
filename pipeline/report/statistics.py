"""The report's figures, computed by Beam in one pass over any number of scored rows.

Each figure is a global combine whose accumulator has a fixed size: counts, mean and variance (merged
with Chan's formula), a 1,000-bin histogram of scores, a histogram of score by caption length,
percentiles from Beam's approximate-quantile combiner (rank error at most 0.1% of the rows; exact
below about 15,000 rows), and the few lowest- and highest-scoring rows. Nothing collects the scores.

Percentiles, mean, std, the histograms and the rows shown are over scored rows only: a failed row's
0.0 is not a score.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, NamedTuple, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io import ReadAllFromParquetBatched, ReadAllFromText
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from pipeline.io.arrow import table_rows
from pipeline.report.thumbnails import thumbnails
from transforms import ImageSettings, OutputFields, RecordFields
from transforms.inputs.tokenizer import LongCLIPTokenizer

METRICS_NAMESPACE = "report"
SCORE_BINS = 1000  # histogram of scores over [0, 1]
LENGTH_BIN_TOKENS = 8  # caption lengths, in tokens with start and end, in bins of 8...
LENGTH_BINS = 64  # ...up to 512; longer captions count in the last bin
LENGTH_SCORE_BINS = 100  # scores over [0, 1], against caption length
PERCENTILES = tuple(range(1, 100))
KEEP_TOP_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))
QUANTILE_EPSILON = 0.001
CAPTION_CHARS_SHOWN = 1200


def is_parquet(path: str) -> bool:
    return path.lower().endswith(".parquet")


class ReadScoredRows(beam.PTransform):
    """Files → dicts: Parquet files by their extension, every other file as JSON Lines. A line that is not
    a JSON object becomes None (counted as unreadable), so one stray line never stops a report."""

    def __init__(self, paths: Iterable[str]):
        super().__init__()
        self._paths = sorted(paths)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        jsonl = [path for path in self._paths if not is_parquet(path)]
        parquet = [path for path in self._paths if is_parquet(path)]
        parts = []
        if jsonl:
            parts.append(
                begin
                | "JsonlFiles" >> beam.Create(jsonl)
                | "ReadLines" >> ReadAllFromText()
                | "ParseJson" >> beam.FlatMap(_parse_line)
            )
        if parquet:
            parts.append(
                begin
                | "ParquetFiles" >> beam.Create(parquet)
                | "ReadParquet" >> ReadAllFromParquetBatched()
                | "Rows" >> beam.FlatMap(table_rows)  # every valid value, as the job reads them
            )
        if not parts:
            return begin | "NoFiles" >> beam.Create([])
        return parts | "AllRows" >> beam.Flatten()


def _parse_line(line: str) -> list[Optional[dict]]:
    if not line.strip():
        return []
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    return [row if isinstance(row, dict) else None]


class Facts(NamedTuple):
    """What the figures need of one row."""

    readable: bool
    has_score: bool
    score: Optional[float]  # set when the row was scored
    reason: Optional[str]  # set when it failed
    truncated: bool
    tokens: Optional[int]  # the caption's length, for scored rows with a text caption


class _RowFacts(beam.DoFn):
    def __init__(self, fields: RecordFields):
        self._fields = fields
        self._outputs = OutputFields.of(fields)

    def setup(self) -> None:
        self._tokenizer = LongCLIPTokenizer()

    def process(self, row: Optional[dict]):
        if row is None:
            Metrics.counter(METRICS_NAMESPACE, "unreadable_lines").inc()
            yield Facts(False, False, None, None, False, None)
            return
        outputs = self._outputs
        score, reason = row.get(outputs.score), row.get(outputs.reason)
        has_score = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        truncated = row.get(outputs.truncated) is True
        if not has_score or reason is not None:
            yield Facts(True, has_score, None, str(reason) if reason is not None else None, truncated, None)
            return
        yield Facts(True, True, float(score), None, truncated, self._tokens(row.get(self._fields.text_key)))

    def _tokens(self, text: Any) -> Optional[int]:
        if not isinstance(text, str):
            return None
        limit = LENGTH_BIN_TOKENS * LENGTH_BINS
        return len(self._tokenizer.encode(" ".join(text.split()), stop_after=limit)) + 2  # with start and end


def score_bin(score: float, bins: int) -> int:
    return min(max(int(score * bins), 0), bins - 1)


def length_bin(tokens: int) -> int:
    return min(tokens // LENGTH_BIN_TOKENS, LENGTH_BINS - 1)


class _Counts(beam.CombineFn):
    """Counts, mean/variance, min/max and the histograms, in accumulators of fixed size."""

    def create_accumulator(self) -> dict:
        return {
            "rows": 0,
            "unreadable": 0,
            "without_score": 0,
            "truncated": 0,
            "failed": {},
            "n": 0,
            "mean": 0.0,
            "m2": 0.0,
            "min": math.inf,
            "max": -math.inf,
            "histogram": np.zeros(SCORE_BINS, dtype=np.int64),
            "by_length": np.zeros((LENGTH_BINS, LENGTH_SCORE_BINS), dtype=np.int64),
            "length_sum": np.zeros(LENGTH_BINS, dtype=np.float64),
        }

    def add_input(self, acc: dict, facts: Facts) -> dict:
        acc["rows"] += 1
        if not facts.readable:
            acc["unreadable"] += 1
            return acc
        acc["truncated"] += facts.truncated
        if facts.reason is not None:
            acc["failed"][facts.reason] = acc["failed"].get(facts.reason, 0) + 1
            return acc
        if not facts.has_score:
            acc["without_score"] += 1
            return acc
        score = facts.score
        acc["n"] += 1  # Welford's update
        delta = score - acc["mean"]
        acc["mean"] += delta / acc["n"]
        acc["m2"] += delta * (score - acc["mean"])
        acc["min"], acc["max"] = min(acc["min"], score), max(acc["max"], score)
        acc["histogram"][score_bin(score, SCORE_BINS)] += 1
        if facts.tokens is not None:
            row = length_bin(facts.tokens)
            acc["by_length"][row, score_bin(score, LENGTH_SCORE_BINS)] += 1
            acc["length_sum"][row] += score
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for acc in accumulators:
            for key in ("rows", "unreadable", "without_score", "truncated"):
                merged[key] += acc[key]
            for reason, count in acc["failed"].items():
                merged["failed"][reason] = merged["failed"].get(reason, 0) + count
            n = merged["n"] + acc["n"]
            if acc["n"]:  # Chan et al.'s pairwise combination of mean and sum of squared deviations
                delta = acc["mean"] - merged["mean"]
                merged["m2"] += acc["m2"] + delta * delta * merged["n"] * acc["n"] / n
                merged["mean"] += delta * acc["n"] / n
                merged["n"] = n
            merged["min"], merged["max"] = min(merged["min"], acc["min"]), max(merged["max"], acc["max"])
            for key in ("histogram", "by_length", "length_sum"):
                merged[key] += acc[key]
        return merged

    def extract_output(self, acc: dict) -> dict:
        return acc


class ShownRow(NamedTuple):
    score: float
    image: Any
    caption: Any


def _shown(row: Optional[dict], fields: RecordFields) -> list[ShownRow]:
    outputs = OutputFields.of(fields)
    if row is None or row.get(outputs.reason) is not None:
        return []
    score = row.get(outputs.score)
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        return []
    caption = row.get(fields.text_key)
    if isinstance(caption, str) and len(caption) > CAPTION_CHARS_SHOWN:
        caption = caption[:CAPTION_CHARS_SHOWN] + "…"
    return [ShownRow(float(score), row.get(fields.image_key), caption)]


class ScoreStatistics(beam.PTransform):
    """Rows (dicts, or None for unreadable lines) → one dict: the summary and the figures behind the charts,
    with the lowest- and highest-scoring rows and their thumbnails (read with `images`' limits)."""

    def __init__(self, fields: RecordFields, images: ImageSettings, rows_shown: int = 12):
        super().__init__()
        self._fields = fields
        self._images = images
        self._rows_shown = rows_shown

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        facts = rows | "Facts" >> beam.ParDo(_RowFacts(self._fields))
        counts = facts | "Counts" >> beam.CombineGlobally(_Counts())
        quantiles = (
            facts
            | "Scores" >> beam.FlatMap(lambda f: [f.score] if f.score is not None else [])
            | "Quantiles" >> beam.CombineGlobally(ApproximateQuantilesCombineFn.create(101, epsilon=QUANTILE_EPSILON))
        )
        shown = rows | "ShownRows" >> beam.FlatMap(_shown, self._fields)
        lowest = (
            shown
            | "Lowest" >> beam.combiners.Top.Of(self._rows_shown, key=_by_score, reverse=True)
            | "LowestThumbnails" >> beam.Map(_for_page, self._images)
        )
        highest = (
            shown
            | "Highest" >> beam.combiners.Top.Of(self._rows_shown, key=_by_score)
            | "HighestThumbnails" >> beam.Map(_for_page, self._images)
        )
        return (
            rows.pipeline
            | "Once" >> beam.Create([None])
            | "Assemble"
            >> beam.Map(
                _assemble,
                AsSingleton(counts),
                AsSingleton(quantiles),
                AsSingleton(lowest),
                AsSingleton(highest),
                self._fields.output_key,
            )
        )


def _by_score(row: ShownRow) -> float:
    return row.score


def _for_page(rows: list[ShownRow], images: ImageSettings) -> list[dict]:
    """The rows as JSON-ready dicts, best first for the highest and worst first for the lowest, with thumbnails."""
    made = thumbnails([row.image for row in rows], images)
    return [
        {
            "score": row.score,
            "image": _as_text(row.image),
            "caption": _as_text(row.caption),
            "thumbnail": picture.data_uri,
            "thumbnail_error": picture.error,
        }
        for row, picture in zip(rows, made, strict=True)
    ]


def _as_text(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"({len(value):,} bytes of image data in the row)"
    return json.dumps(value, ensure_ascii=False, default=repr)


def _assemble(_, counts: dict, quantiles: list, lowest: list, highest: list, output_key: str) -> dict:
    n = counts["n"]
    summary = {
        "rows": counts["rows"],
        "scored": n,
        "failed": dict(sorted(counts["failed"].items())),
        "truncated": counts["truncated"],
        "mean": counts["mean"] if n else None,
        "std": math.sqrt(counts["m2"] / n) if n else None,
        "min": counts["min"] if n else None,
        "max": counts["max"] if n else None,
        "percentiles": {f"p{p}": quantiles[p] for p in PERCENTILES} if n else {},
        "keep_top_thresholds": {str(f): quantiles[round(100 * (1 - f))] for f in KEEP_TOP_FRACTIONS} if n else {},
        "without_score": counts["without_score"],
        "unreadable_lines": counts["unreadable"],
        "output_key": output_key,
    }
    return {
        "summary": summary,
        "score_histogram": counts["histogram"].tolist(),
        "by_length": counts["by_length"].tolist(),
        "length_score_sum": counts["length_sum"].tolist(),
        "lowest": sorted(lowest, key=lambda row: row["score"]),
        "highest": sorted(highest, key=lambda row: row["score"], reverse=True),
    }
