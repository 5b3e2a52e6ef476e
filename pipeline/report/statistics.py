"""The report's figures, computed by Beam in one pass over any number of scored rows.

Each figure is a global combine whose accumulator has a fixed size: counts, mean and variance (merged
with Chan's formula), a 1,000-bin histogram of scores, a histogram of score by caption length,
percentiles from Beam's approximate-quantile combiner (rank error at most 0.1% of the rows; exact
below about 15,000 rows), failures by reason (at most `MAX_REASONS` of them, the rest counted together),
and the few lowest- and highest-scoring rows. Nothing collects the scores.

Percentiles, mean, std, the histograms and the rows shown are over scored rows only: a failed row's
0.0 is not a score, and neither is a value that is not a finite number in [0, 1] (counted apart, by kind).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, NamedTuple, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from pipeline.report import parts
from pipeline.report.shown import SHOWN, ShownRow, for_page, shown_row
from pipeline.report.text import shown_text
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
MAX_REASONS = 1000  # distinct failure reasons counted one by one; rows with any other are counted together
REASON_CHARS = 200  # a reason longer than this is cut (the job's reason codes are a few words)
EXAMPLE_CHARS = 40  # an invalid score as shown
TOKENIZED_WORDS, TOKENIZED_CHARS = 2048, 32768  # enough of a caption for the longest length counted (2,048)

# What is wrong with a score field that holds something other than a finite number in [0, 1].
NOT_A_NUMBER, NOT_FINITE, OUT_OF_RANGE = "not a number", "not finite", "outside [0, 1]"


def check_score(value: Any) -> tuple[Optional[float], Optional[str]]:
    """(the score, None) for a finite number in [0, 1]; (None, what is wrong) otherwise; (None, None) when
    there is none. Integers of any size are compared as integers: 10**400 is out of range, not an error."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, NOT_A_NUMBER
    if isinstance(value, float) and not math.isfinite(value):
        return None, NOT_FINITE
    if not 0 <= value <= 1:
        return None, OUT_OF_RANGE
    return float(value), None


def _example(value: Any) -> str:
    """The value as shown: a huge integer by its number of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**EXAMPLE_CHARS:
        try:
            return f"an integer of {len(str(abs(value))):,} digits"
        except ValueError:  # over Python's limit on digits converted to text
            return "an integer of thousands of digits"
    return shown_text(value if isinstance(value, str) else repr(value), EXAMPLE_CHARS)


class Facts(NamedTuple):
    """What the figures need of one row."""

    readable: bool
    has_score: bool  # a valid score
    score: Optional[float]  # set when the row was scored
    reason: Optional[str]  # set when it failed
    truncated: bool
    tokens: Optional[int]  # the caption's length, for scored rows with a text caption
    invalid: Optional[str] = None  # what is wrong with a score that is not valid
    example: Optional[str] = None  # that score, shown short


class _RowFacts(beam.DoFn):
    """Row → `Facts`, and for scored rows a `ShownRow` candidate on the `SHOWN` output."""

    def __init__(self, fields: RecordFields, images: ImageSettings):
        self._fields = fields
        self._outputs = OutputFields.of(fields)
        self._images = images

    def setup(self) -> None:
        self._tokenizer = LongCLIPTokenizer()

    def process(self, row: Optional[dict]):
        if not isinstance(row, dict):
            Metrics.counter(METRICS_NAMESPACE, "unreadable_lines").inc()
            yield Facts(False, False, None, None, False, None)
            return
        outputs = self._outputs
        reason = row.get(outputs.reason)
        truncated = row.get(outputs.truncated) is True
        if reason is not None:
            yield Facts(True, False, None, shown_text(reason, REASON_CHARS), truncated, None)
            return
        raw = row.get(outputs.score)
        score, invalid = check_score(raw)
        if score is None:
            example = _example(raw) if invalid else None
            yield Facts(True, False, None, None, truncated, None, invalid, example)
            return
        text = row.get(self._fields.text_key)
        yield Facts(True, True, score, None, truncated, self._tokens(text, LENGTH_BIN_TOKENS * LENGTH_BINS))
        shown = shown_row(score, row, self._fields, self._images)
        yield beam.pvalue.TaggedOutput(SHOWN, shown)
        if isinstance(text, str) and (row.get(outputs.chunks) or row.get(outputs.sentences)):
            limit = parts.LENGTH_BIN_TOKENS * parts.LENGTH_BINS
            found = parts.part_facts(row, outputs, text, self._tokens(text, limit), shown)
            if found is not None:
                yield beam.pvalue.TaggedOutput(parts.PARTS, found)

    def _tokens(self, text: Any, limit: int) -> Optional[int]:
        """Tokens with start and end, counted up to `limit`, over the caption's first words only."""
        if not isinstance(text, str):
            return None
        words = []
        for number, match in enumerate(re.finditer(r"\S+", text)):
            if number == TOKENIZED_WORDS:
                break
            words.append(match.group())
        return len(self._tokenizer.encode(" ".join(words)[:TOKENIZED_CHARS], stop_after=limit)) + 2


def score_bin(score: float, bins: int) -> int:
    return min(max(int(score * bins), 0), bins - 1)


def length_bin(tokens: int) -> int:
    return min(tokens // LENGTH_BIN_TOKENS, LENGTH_BINS - 1)


def _add_count(counts: dict, key: str, count: int = 1) -> None:
    counts[key] = counts.get(key, 0) + count


class _Counts(beam.CombineFn):
    """Counts, mean/variance, min/max and the histograms, in accumulators of fixed size."""

    def create_accumulator(self) -> dict:
        return {
            "rows": 0,
            "unreadable": 0,
            "without_score": 0,
            "truncated": 0,
            "failed": {},
            "failed_other": 0,
            "invalid": {},
            "invalid_examples": {},
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
            if facts.reason in acc["failed"] or len(acc["failed"]) < MAX_REASONS:
                _add_count(acc["failed"], facts.reason)
            else:
                acc["failed_other"] += 1
            return acc
        if facts.invalid is not None:
            _add_count(acc["invalid"], facts.invalid)
            acc["invalid_examples"].setdefault(facts.invalid, facts.example)
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
            for key in ("rows", "unreadable", "without_score", "truncated", "failed_other"):
                merged[key] += acc[key]
            for key in ("failed", "invalid"):
                for name, count in acc[key].items():
                    _add_count(merged[key], name, count)
            for name, example in acc["invalid_examples"].items():
                merged["invalid_examples"].setdefault(name, example)
            n = merged["n"] + acc["n"]
            if acc["n"]:  # Chan et al.'s pairwise combination of mean and sum of squared deviations
                delta = acc["mean"] - merged["mean"]
                merged["m2"] += acc["m2"] + delta * delta * merged["n"] * acc["n"] / n
                merged["mean"] += delta * acc["n"] / n
                merged["n"] = n
            merged["min"], merged["max"] = min(merged["min"], acc["min"]), max(merged["max"], acc["max"])
            for key in ("histogram", "by_length", "length_sum"):
                merged[key] += acc[key]
        if len(merged["failed"]) > MAX_REASONS:  # the most frequent are kept; the others counted together
            ranked = sorted(merged["failed"].items(), key=lambda item: (-item[1], item[0]))
            merged["failed"] = dict(ranked[:MAX_REASONS])
            merged["failed_other"] += sum(count for _, count in ranked[MAX_REASONS:])
        return merged

    def extract_output(self, acc: dict) -> dict:
        return acc


class ScoreStatistics(beam.PTransform):
    """Rows (dicts, or None for unreadable lines) → one dict: the summary and the figures behind the charts,
    with the lowest- and highest-scoring rows and their thumbnails (read with `images`' limits)."""

    def __init__(self, fields: RecordFields, images: ImageSettings, rows_shown: int = 12):
        super().__init__()
        self._fields = fields
        self._images = images
        self._rows_shown = rows_shown

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        facts, shown, caption_parts = rows | "Facts" >> beam.ParDo(_RowFacts(self._fields, self._images)).with_outputs(
            SHOWN, parts.PARTS, main="facts"
        )
        part_figures = caption_parts | "CaptionParts" >> parts.PartStatistics(
            self._images, self._fields.image_key, self._rows_shown
        )
        counts = facts | "Counts" >> beam.CombineGlobally(_Counts())
        quantiles = (
            facts
            | "Scores" >> beam.FlatMap(lambda f: [f.score] if f.score is not None else [])
            | "Quantiles" >> beam.CombineGlobally(ApproximateQuantilesCombineFn.create(101, epsilon=QUANTILE_EPSILON))
        )
        lowest = (
            shown
            | "Lowest" >> beam.combiners.Top.Of(self._rows_shown, key=_by_score, reverse=True)
            | "LowestThumbnails" >> beam.Map(for_page, self._images, self._fields.image_key)
        )
        highest = (
            shown
            | "Highest" >> beam.combiners.Top.Of(self._rows_shown, key=_by_score)
            | "HighestThumbnails" >> beam.Map(for_page, self._images, self._fields.image_key)
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
                AsSingleton(part_figures),
                self._fields.output_key,
            )
        )


def _by_score(row: ShownRow) -> float:
    return row.score


def _assemble(
    _, counts: dict, quantiles: list, lowest: list, highest: list, caption_parts: dict, output_key: str
) -> dict:
    n = counts["n"]
    summary = {
        "rows": counts["rows"],
        "scored": n,
        "failed": dict(sorted(counts["failed"].items())),
        "failed_other": counts["failed_other"],
        "truncated": counts["truncated"],
        "mean": counts["mean"] if n else None,
        "std": math.sqrt(counts["m2"] / n) if n else None,
        "min": counts["min"] if n else None,
        "max": counts["max"] if n else None,
        "percentiles": {f"p{p}": quantiles[p] for p in PERCENTILES} if n else {},
        "keep_top_thresholds": {str(f): quantiles[round(100 * (1 - f))] for f in KEEP_TOP_FRACTIONS} if n else {},
        "without_score": counts["without_score"],
        "invalid_scores": dict(sorted(counts["invalid"].items())),
        "invalid_score_examples": dict(sorted(counts["invalid_examples"].items())),
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
        "parts": caption_parts,
    }
