"""Every chart draws, with data and without (no scored rows, no failures), as a PNG of the expected size."""

import io

import pytest
from PIL import Image

from pipeline.report import charts
from pipeline.report.statistics import LENGTH_BINS, LENGTH_SCORE_BINS, SCORE_BINS


def _empty_data() -> dict:
    return {
        "summary": {"failed": {}, "percentiles": {}, "keep_top_thresholds": {}},
        "score_histogram": [0] * SCORE_BINS,
        "by_length": [[0] * LENGTH_SCORE_BINS for _ in range(LENGTH_BINS)],
        "length_score_sum": [0.0] * LENGTH_BINS,
    }


@pytest.mark.parametrize("name", list(charts.CHARTS))
def test_charts_draw_without_scored_rows(name):
    png = charts.CHARTS[name](_empty_data())
    assert Image.open(io.BytesIO(png)).size[0] == 700


@pytest.mark.slow
def test_charts_draw_from_the_figures(scored_report):
    import json

    _, folder, _ = scored_report
    data = json.loads((folder / "report_data.json").read_text())
    drawn = charts.draw_all(data)
    assert list(drawn) == ["histogram.png", "retention.png", "score_by_length.png", "failures.png"]
    for name, png in drawn.items():
        width, height = Image.open(io.BytesIO(png)).size
        assert width == 700 and height >= 220, name
        assert png == (folder / name).read_bytes(), name  # the files are these charts
