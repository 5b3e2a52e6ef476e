"""The report's figures against numpy on the same scores: counts exact, percentiles within 0.005."""

import collections
import json

import apache_beam as beam
import numpy as np
import pytest

from pipeline.io.parts import plan_parts
from pipeline.report.read import ReadScoredRows
from pipeline.report.statistics import ScoreStatistics
from tests.support.scored import make_scored_rows, scores_of, write_jsonl, write_parquet
from transforms import ImageSettings, RecordFields


def test_summary_counts_are_exact_and_percentiles_match_numpy(scored_report):
    rows, folder, summary = scored_report
    assert json.loads((folder / "summary.json").read_text()) == summary
    scores = scores_of(rows)
    assert summary["rows"] == len(rows) + 1 and summary["unreadable_lines"] == 1 and summary["without_score"] == 0
    assert summary["scored"] == len(scores) > 2500
    assert summary["failed"] == dict(
        collections.Counter(r["longclip_score_reason"] for r in rows if r["longclip_score_reason"])
    )
    assert summary["truncated"] == sum(r["longclip_score_truncated"] for r in rows) > 0
    assert summary["min"] == scores.min() and summary["max"] == scores.max()
    assert summary["mean"] == pytest.approx(scores.mean(), abs=1e-12)
    assert summary["std"] == pytest.approx(scores.std(), abs=1e-12)
    assert list(summary["percentiles"]) == [f"p{p}" for p in range(1, 100)]
    for p in range(1, 100):
        assert abs(summary["percentiles"][f"p{p}"] - np.percentile(scores, p)) <= 0.005, p
    assert list(summary["keep_top_thresholds"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    for fraction, threshold in summary["keep_top_thresholds"].items():
        assert abs(threshold - np.quantile(scores, 1 - float(fraction))) <= 0.005
        assert abs((scores >= threshold).mean() - float(fraction)) <= 0.005


def test_lowest_and_highest_rows_are_the_extreme_scores(scored_report):
    rows, folder, _ = scored_report
    data = json.loads((folder / "report_data.json").read_text())
    scores = np.sort(scores_of(rows))
    assert [row["score"] for row in data["lowest"]] == scores[:12].tolist()
    assert [row["score"] for row in data["highest"]] == scores[::-1][:12].tolist()
    assert data["lowest"][0]["thumbnail"] is None and data["lowest"][0]["thumbnail_note"] == "not found"
    assert (
        data["lowest"][0]["thumbnail_error"].startswith("Not found: ")
        and "does not exist" in (data["lowest"][0]["thumbnail_error"])
    )
    assert data["highest"][0]["image"].startswith("http://127.0.0.1:")
    assert data["highest"][0]["thumbnail"].startswith("data:image/jpeg;base64,")
    assert sum(map(sum, data["by_length"])) == len(scores)  # every scored row has a caption here
    assert sum(data["score_histogram"]) == len(scores)


def _statistics(rows_source, tmp_path, **kwargs) -> dict:
    """ScoreStatistics in a pipeline of its own; its one output element, through JSON as the report writes it."""
    path = tmp_path / f"statistics-{len(list(tmp_path.iterdir()))}.json"
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (
            rows_source(pipeline)
            | ScoreStatistics(RecordFields(**kwargs), ImageSettings(), rows_shown=3)
            | beam.Map(json.dumps)
            | beam.io.WriteToText(str(path), num_shards=1, shard_name_template="")
        )
    (line,) = path.read_text().splitlines()
    return json.loads(line)


@pytest.mark.slow
def test_jsonl_and_parquet_give_the_same_figures(tmp_path):
    rows = make_scored_rows(300, seed=3)
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    parquet = write_parquet(tmp_path / "rows.parquet", rows)
    read = [ReadScoredRows(plan_parts(str(path)), RecordFields(), 1 << 20) for path in (jsonl, parquet)]
    from_jsonl = _statistics(lambda p: p | read[0], tmp_path)
    from_parquet = _statistics(lambda p: p | read[1], tmp_path)
    assert from_jsonl == from_parquet
    assert from_jsonl["summary"]["scored"] == len(scores_of(rows))


@pytest.mark.slow
def test_percentiles_stay_within_tolerance_past_the_exact_range(tmp_path):
    """40,000 scores: more than the quantile sketch keeps exactly, so its approximation is what is checked."""
    rng = np.random.default_rng(7)
    scores = np.clip(rng.beta(8, 5, 40_000), 0, 1)
    rows = [{"longclip_score": float(s), "longclip_score_reason": None} for s in scores]
    summary = _statistics(lambda p: p | beam.Create(rows, reshuffle=False), tmp_path)["summary"]
    worst = max(abs(summary["percentiles"][f"p{p}"] - np.percentile(scores, p)) for p in range(1, 100))
    assert worst <= 0.005, worst
    assert summary["scored"] == 40_000 and summary["rows"] == 40_000


def test_other_field_names_and_rows_without_scores(tmp_path):
    rows = [
        {"s": 0.7, "s_reason": None, "s_truncated": True, "caption": "a cat", "pic": "x.png"},
        {"s": 0.0, "s_reason": "text_empty", "s_truncated": False, "caption": " ", "pic": "x.png"},
        {"source": "in.jsonl", "reason": "not_json"},  # a dead-letter entry caught by a wide glob
        {"s": "NaN", "s_reason": None},  # the job writes a NaN as this string: not a score
    ]
    data = _statistics(lambda p: p | beam.Create(rows), tmp_path, output_key="s", text_key="caption", image_key="pic")
    summary = data["summary"]
    assert (summary["rows"], summary["scored"], summary["without_score"], summary["truncated"]) == (4, 1, 1, 1)
    assert summary["invalid_scores"] == {"not a number": 1} and summary["invalid_score_examples"] == {
        "not a number": "NaN"
    }
    assert summary["failed"] == {"text_empty": 1} and summary["percentiles"]["p50"] == 0.7
    assert data["highest"][0]["caption"] == "a cat" and data["highest"][0]["image"] == "x.png"
    assert sum(map(sum, data["by_length"])) == 1


@pytest.mark.slow
def test_no_scored_rows_gives_empty_figures(tmp_path):
    rows = [{"longclip_score": 0.0, "longclip_score_reason": "image_missing"}]
    summary = _statistics(lambda p: p | beam.Create(rows), tmp_path)["summary"]
    assert summary["scored"] == 0 and summary["mean"] is None and summary["percentiles"] == {}
    assert summary["keep_top_thresholds"] == {} and summary["failed"] == {"image_missing": 1}
