"""The exact score at or above which a fraction of scores lies, over any number of rows.

`Top.Largest(k)` would hold k scores on one worker (300 million for 30% of a billion rows). Instead the
k-th largest score is found by radix selection on the score's value, in three global combines that each
hold a fixed amount: a 65,536-bin histogram of the scores (which bin holds the k-th largest), a
65,536-bin histogram inside that bin, and the distinct values inside that sub-bin (bins 2^-32 wide, so
in practice one or two values). Each step reads the scores again with the previous step's answer as a
side input. Scores are expected in [0, 1]; others are still placed exactly (in the first or last bin).
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

_LOGGER = logging.getLogger(__name__)

BINS = 1 << 16


def rank_for(fraction: float, count: int) -> int:
    """How many of `count` scores `fraction` keeps: at least one, rounded up (0.3 of 1000 is 300, not 301)."""
    return max(1, math.ceil(round(fraction * count, 9))) if count else 0


def digits(score: float) -> tuple[int, int]:
    """The score's first two base-65,536 digits in [0, 1], non-decreasing in the score.

    Multiplying by 2**16 and taking off the integer part are exact in floating point, so every step
    agrees on which bin a score is in.
    """
    scaled = min(max(score, 0.0), 1.0) * BINS
    first = min(int(scaled), BINS - 1)
    return first, min(int((scaled - first) * BINS), BINS - 1)


class _Histogram(beam.CombineFn):
    """Counts of small integers in [0, BINS)."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(BINS, dtype=np.int64)

    def add_input(self, counts: np.ndarray, digit: int) -> np.ndarray:
        counts[digit] += 1
        return counts

    def merge_accumulators(self, accumulators: Iterable[np.ndarray]) -> np.ndarray:
        return np.sum(list(accumulators), axis=0)

    def extract_output(self, counts: np.ndarray) -> np.ndarray:
        return counts


class _ValueCounts(beam.CombineFn):
    """How many times each distinct value occurs (used inside one sub-bin only)."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, counts: dict, value: float) -> dict:
        counts[value] = counts.get(value, 0) + 1
        return counts

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged: dict = {}
        for counts in accumulators:
            for value, count in counts.items():
                merged[value] = merged.get(value, 0) + count
        return merged

    def extract_output(self, counts: dict) -> dict:
        return counts


class Step(NamedTuple):
    """Where the k-th largest score is after one step: `rank` is still to count down inside `digit`."""

    digit: Optional[int]  # None: there are fewer scores than that (none at all)
    rank: int


def _descend(counts: np.ndarray, rank: int) -> Step:
    """The bin holding the `rank`-th largest of the counted scores, and its rank inside that bin."""
    if rank <= 0 or rank > counts.sum():
        return Step(None, rank)
    from_top = np.cumsum(counts[::-1])
    position = int(np.searchsorted(from_top, rank))  # the first bin (from the top) reaching the rank
    digit = BINS - 1 - position
    return Step(digit, rank - int(from_top[position] - counts[digit]))


def _first_step(counts: np.ndarray, fraction: float) -> Step:
    return _descend(counts, rank_for(fraction, int(counts.sum())))


def _second_step(counts: np.ndarray, first: Step) -> Step:
    return Step(None, first.rank) if first.digit is None else _descend(counts, first.rank)


def _cutoff(_, first: Step, second: Step, values: dict, fraction: float) -> Optional[float]:
    if first.digit is None or second.digit is None:
        return None
    rank = second.rank
    for value in sorted(values, reverse=True):
        rank -= values[value]
        if rank <= 0:
            _LOGGER.info("keep_top_fraction %g: cutoff score %r", fraction, value)
            return value
    raise AssertionError("the histograms and the values disagree")  # cannot happen: same scores, same bins


class TopFractionCutoff(beam.PTransform):
    """PCollection of scores → a singleton PCollection: the score at or above which `fraction` of them lie
    (the ceil(fraction × n)-th largest, exactly), or None when there are no scores."""

    def __init__(self, fraction: float):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self._fraction = fraction

    def expand(self, scores: beam.PCollection) -> beam.PCollection:
        first = (
            scores
            | "FirstDigits" >> beam.Map(lambda score: digits(score)[0])
            | "FirstHistogram" >> beam.CombineGlobally(_Histogram())
            | "FirstStep" >> beam.Map(_first_step, self._fraction)
        )
        second = (
            scores
            | "InFirstBin" >> beam.FlatMap(_in_bin, AsSingleton(first))
            | "SecondHistogram" >> beam.CombineGlobally(_Histogram())
            | "SecondStep" >> beam.Map(_second_step, AsSingleton(first))
        )
        values = (
            scores
            | "InSecondBin" >> beam.FlatMap(_in_sub_bin, AsSingleton(first), AsSingleton(second))
            | "Values" >> beam.CombineGlobally(_ValueCounts())
        )
        return (
            scores.pipeline
            | "Once" >> beam.Create([None])
            | "Cutoff"
            >> beam.Map(_cutoff, AsSingleton(first), AsSingleton(second), AsSingleton(values), self._fraction)
        )


def _in_bin(score: float, first: Step) -> list[int]:
    first_digit, second_digit = digits(score)
    return [second_digit] if first_digit == first.digit else []


def _in_sub_bin(score: float, first: Step, second: Step) -> list[float]:
    return [score] if first.digit is not None and digits(score) == (first.digit, second.digit) else []
