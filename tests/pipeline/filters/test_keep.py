"""KeepByScore: every record in exactly one of kept and rejected; rejected ones carry the cutoff used."""

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.filters.keep import KeepByScore
from transforms import OutputFields

OUTPUTS = OutputFields("longclip_score")


def _records(count, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        failed = i % 10 == 0
        records.append(
            {
                "id": i,
                "longclip_score": 0.0 if failed else float(rng.random()),
                "longclip_score_reason": "image_not_found" if failed else None,
            }
        )
    return records


def _split(records, tmp_path, **kwargs):
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        kept, rejected = pipeline | beam.Create(records) | KeepByScore(OUTPUTS, **kwargs)
        for name, pcoll in (("kept", kept), ("rejected", rejected)):
            (
                pcoll
                | name >> beam.Map(json.dumps)
                | f"Write{name}" >> beam.io.WriteToText(str(tmp_path / name), num_shards=1, shard_name_template="")
            )
    return [[json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("kept", "rejected")]


@pytest.mark.slow
def test_top_fraction_keeps_that_fraction_of_scored_rows(tmp_path):
    records = _records(1000)
    kept, rejected = _split(records, tmp_path, top_fraction=0.3)
    scored = sorted((r["longclip_score"] for r in records if r["longclip_score_reason"] is None), reverse=True)
    assert len(kept) == 270 == round(0.3 * len(scored))
    assert sorted(r["id"] for r in kept + rejected) == list(range(1000))
    cutoff = scored[269]
    assert min(r["longclip_score"] for r in kept) == cutoff
    assert {r["longclip_score_cutoff"] for r in rejected} == {cutoff}
    assert all("longclip_score_cutoff" not in r for r in kept)
    assert sum(r["longclip_score_reason"] is not None for r in rejected) == 100  # every failed row


@pytest.mark.slow
def test_min_score_and_top_fraction_together_use_the_higher_cutoff(tmp_path):
    records = _records(200, seed=1)
    kept, rejected = _split(records, tmp_path, min_score=0.95, top_fraction=0.5)
    assert kept and all(r["longclip_score"] >= 0.95 for r in kept)
    assert {r["longclip_score_cutoff"] for r in rejected} == {0.95}
    assert len(kept) + len(rejected) == 200


def test_nothing_scored_rejects_everything(tmp_path):
    records = [r for r in _records(30) if r["longclip_score_reason"]]
    kept, rejected = _split(records, tmp_path, top_fraction=0.3)
    assert kept == [] and len(rejected) == len(records)
    assert {r["longclip_score_cutoff"] for r in rejected} == {None}


def test_min_score_filters_a_stream():
    records = _records(40, seed=2)
    stream = test_stream.TestStream()
    for start in range(0, 40, 10):
        stream = stream.add_elements(records[start : start + 10]).advance_processing_time(1)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    keep = [r["id"] for r in records if r["longclip_score_reason"] is None and r["longclip_score"] >= 0.5]
    reject = [(r["id"], 0.5) for r in records if r["id"] not in keep]
    assert keep and reject
    with beam.Pipeline(options=options) as pipeline:
        kept, rejected = pipeline | stream | KeepByScore(OUTPUTS, min_score=0.5)
        assert_that(kept | "KeptIds" >> beam.Map(lambda r: r["id"]), equal_to(keep), label="Kept")
        rejected_ids = rejected | "RejectedIds" >> beam.Map(lambda r: (r["id"], r["longclip_score_cutoff"]))
        assert_that(rejected_ids, equal_to(reject), label="Rejected")


def test_top_fraction_refuses_a_stream():
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with pytest.raises(ValueError, match="bounded input"):
        with beam.Pipeline(options=options) as pipeline:
            pipeline | test_stream.TestStream().advance_watermark_to_infinity() | KeepByScore(OUTPUTS, top_fraction=0.3)
