"""The exact top-fraction cutoff, against sorting, where the radix steps are hardest: one bin, ties, edges."""

import json

import apache_beam as beam
import numpy as np
import pytest

from pipeline.filters.cutoff import BINS, TopFractionCutoff, digits, rank_for


def _cutoff(scores, fraction, tmp_path):
    path = tmp_path / f"cutoff-{fraction}-{len(scores)}.json"
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (
            pipeline
            | beam.Create([float(s) for s in scores])
            | TopFractionCutoff(fraction)
            | beam.Map(json.dumps)
            | beam.io.WriteToText(str(path), num_shards=1, shard_name_template="")
        )
    return json.loads(path.read_text())


def _expected(scores, fraction):
    ordered = sorted(scores, reverse=True)
    return ordered[rank_for(fraction, len(ordered)) - 1]


def test_rank_rounds_up_but_not_from_float_noise():
    assert [rank_for(f, 1000) for f in (0.1, 0.3, 0.7, 1.0)] == [100, 300, 700, 1000]
    assert rank_for(0.3, 7) == 3 and rank_for(0.01, 10) == 1 and rank_for(0.5, 0) == 0


def test_digits_are_exact_and_never_decrease():
    rng = np.random.default_rng(0)
    values = np.sort(np.concatenate([rng.random(20_000), [0.0, 1.0, 0.5, 2**-16, 1 - 2**-40]]))
    pairs = [digits(float(v)) for v in values]
    assert pairs == sorted(pairs)
    assert digits(0.5) == (BINS // 2, 0) and digits(1.0) == (BINS - 1, BINS - 1) and digits(-3.0) == (0, 0)
    assert digits(2**-16 + 2**-32) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, scores",
    [
        ("spread", np.random.default_rng(1).random(3000)),
        # All in one first-level bin: the second step decides.
        ("one bin", 0.6 + np.random.default_rng(2).random(2000) * 1e-6),
        # All in one 2**-32 sub-bin: only the exact values decide.
        ("one sub-bin", 0.6 + np.arange(500) * 1e-13),
        ("ties", np.repeat([0.2, 0.5, 0.9], [400, 300, 300])),
        ("ends", [0.0, 1.0, 1.0, 0.0, 0.25]),
    ],
)
def test_cutoff_is_the_exact_kth_largest(name, scores, tmp_path):
    scores = [float(s) for s in scores]
    for fraction in (0.3, 0.01, 1.0):
        assert _cutoff(scores, fraction, tmp_path) == _expected(scores, fraction), (name, fraction)


def test_no_scores_give_no_cutoff(tmp_path):
    assert _cutoff([], 0.3, tmp_path) is None
