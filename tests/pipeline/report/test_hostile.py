"""Scored files that hold anything: the report is bounded in time and memory and never crashes.

Each case once broke or swamped the report: a 400-digit integer or 1e308 as a score (OverflowError), a
reason in matplotlib's formula syntax (ParseSyntaxException), 10,000 distinct reasons (96 s, 2 GB, a
320,090-pixel chart), a caption that is a list (a 22.9 MB page), bidi overrides (text shown reversed).
"""

import io
import json
import time

import pytest
from PIL import Image

from pipeline.report.job import run
from pipeline.report.statistics import MAX_REASONS
from tests.support.scored import make_scored_rows

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "gpj.exe" reads as "exe.jpg"


def _report(tmp_path, rows_or_lines, *flags) -> tuple[dict, dict, str]:
    path = tmp_path / "in" / "scored.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in rows_or_lines))
    summary = run(["--input", str(path), "--output", str(tmp_path / "report"), *flags])
    data = json.loads((tmp_path / "report" / "report_data.json").read_text())
    return summary, data, (tmp_path / "report" / "report.html").read_text(encoding="utf-8")


def _scored(score, **fields) -> str:
    """A line as the job writes it, with `score` as raw JSON text (Python cannot write some of these)."""
    row = {"image_path": "img/a.jpg", "text": "a cat", "longclip_score_reason": None, **fields}
    return json.dumps(row)[:-1] + f', "longclip_score": {score}}}\n'


@pytest.mark.slow
def test_scores_that_are_not_finite_numbers_in_0_1_are_counted_apart_and_named(tmp_path):
    lines = make_scored_rows(50, seed=1) + [
        _scored("9" * 400),
        _scored("-" + "9" * 400),
        _scored("1e308"),
        _scored("-0.5"),
        _scored("1.0000001"),
        _scored("NaN"),
        _scored("Infinity"),
        _scored('"0.5"'),
        _scored("true"),
        _scored("[0.5]"),
        _scored("null"),  # no score at all: counted as before
    ]
    summary, data, page = _report(tmp_path, lines)
    scored = [row for row in make_scored_rows(50, seed=1) if row["longclip_score_reason"] is None]
    assert summary["scored"] == len(scored) and summary["rows"] == 61 and summary["without_score"] == 1
    assert summary["invalid_scores"] == {"not a number": 3, "not finite": 2, "outside [0, 1]": 5}
    assert summary["invalid_score_examples"]["outside [0, 1]"] == "an integer of 400 digits"
    assert summary["invalid_score_examples"]["not finite"] == "nan"
    assert 0 <= summary["min"] <= summary["max"] <= 1
    assert sum(data["score_histogram"]) == len(scored), "only scores in [0, 1] are drawn"
    assert "10 rows have a longclip_score that is not a finite number in [0, 1]" in page
    assert "5 outside [0, 1] (e.g. an integer of 400 digits)" in page


@pytest.mark.slow
def test_a_reason_in_matplotlib_formula_syntax_is_drawn_as_text(tmp_path):
    reasons = ["$\\frac{$", "$x^$", "a $ b", "\\", "${}$"]
    rows = [{"longclip_score": 0.0, "longclip_score_reason": reason, "text": "x"} for reason in reasons]
    summary, _, page = _report(tmp_path, rows + make_scored_rows(5))
    assert set(reasons) <= set(summary["failed"])
    chart = Image.open(tmp_path / "report" / "failures.png")
    assert chart.size[0] == 700 and chart.size[1] >= 220
    assert 'data-chart="failures.png"' in page


@pytest.mark.slow
def test_ten_thousand_distinct_reasons_are_bounded_in_time_and_chart_size(tmp_path):
    rows = [
        {"longclip_score": 0.0, "longclip_score_reason": f"reason number {i:05d} " + "x" * 300, "text": "x"}
        for i in range(10_000)
    ]
    started = time.monotonic()
    summary, _, page = _report(tmp_path, rows + make_scored_rows(20))
    elapsed = time.monotonic() - started
    assert elapsed < 45, f"{elapsed:.1f} s (96 s before)"
    failed = 10_000 + sum(1 for row in make_scored_rows(20) if row["longclip_score_reason"])
    assert len(summary["failed"]) == MAX_REASONS and summary["failed_other"] == failed - MAX_REASONS
    assert all(len(reason) <= 201 for reason in summary["failed"]), "reasons are cut"
    width, height = Image.open(tmp_path / "report" / "failures.png").size
    assert width == 700 and height <= 800, height
    assert len(page) < 1_000_000


@pytest.mark.slow
def test_captions_of_any_type_are_shortened_and_bidi_controls_shown_as_marks(tmp_path):
    rows = [
        {"longclip_score": 0.9, "longclip_score_reason": None, "text": list(range(1_000_000)), "image_path": "a.png"},
        {"longclip_score": 0.8, "longclip_score_reason": None, "text": {"k": "v" * 5_000_000}, "image_path": "b.png"},
        {
            "longclip_score": 0.1,
            "longclip_score_reason": None,
            "text": f"a caption {RLO}txet desrever",
            "image_path": f"photos/{RLO}gpj.exe",
        },
        {"longclip_score": 0.0, "longclip_score_reason": f"bad{RLO}reason", "text": "x"},
    ]
    summary, data, page = _report(tmp_path, rows)
    shown = {row["score"]: row for row in data["highest"]}
    assert len(shown[0.9]["caption"]) <= 1201 and shown[0.9]["caption"].startswith("[0, 1, 2, ")
    assert len(shown[0.8]["caption"]) <= 1201 and shown[0.8]["caption"].endswith("…")
    assert RLO not in page, "no bidi override reaches the page"
    assert "a caption <U+202E>txet desrever" in shown[0.1]["caption"]
    assert "photos/&lt;U+202E&gt;gpj.exe" in page
    assert summary["failed"] == {"bad<U+202E>reason": 1}
    assert len(page.encode("utf-8")) < 400_000, "the page does not carry whole captions (22.9 MB before)"


@pytest.mark.slow
def test_an_image_field_of_any_size_or_type_is_not_read(tmp_path):
    rows = [
        {"longclip_score": 0.9, "longclip_score_reason": None, "text": "x", "image_path": "p" * 10_000_000},
        {"longclip_score": 0.8, "longclip_score_reason": None, "text": "x", "image_path": {"a": [1, 2]}},
    ]
    _, data, _ = _report(tmp_path, rows)
    first, second = data["highest"]
    assert first["thumbnail_note"] == "path too long" and len(first["image"]) <= 301
    assert second["thumbnail_note"] == "not a path"


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_large_images_are_decoded_reduced_within_a_pixel_budget(tmp_path):
    """24 thumbnails of 48-megapixel JPEGs: decoded at 1/8 scale (3.5 GB for such a page before)."""
    import subprocess
    import sys

    import numpy as np

    y, x = np.mgrid[0:6000, 0:8000].astype(np.uint16)
    picture = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8))
    del x, y
    path = tmp_path / "large.jpg"
    picture.save(path, quality=70)
    del picture
    code = f"""
import time
from pipeline.report.shown import ShownRow
from pipeline.report import thumbnails
from transforms import ImageSettings
def memory(field):  # KiB: VmRSS now, VmHWM the most this process image ever held (unlike ru_maxrss, not inherited)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
before = memory("VmRSS")
rows = [ShownRow(0.5, "x", "x", {str(path)!r}, None) for _ in range(24)]
started = time.monotonic()
made = thumbnails.thumbnails(rows, ImageSettings(), "image")
elapsed = time.monotonic() - started
after = memory("VmHWM")
assert all(t.data_uri for t in made), [t.error for t in made]
print("PEAK_MB", (after - before) / 1024, "SECONDS", elapsed)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    grown, seconds = float(words[words.index("PEAK_MB") + 1]), float(words[words.index("SECONDS") + 1])
    print(f"thumbnails of 24 48-megapixel JPEGs: peak memory grew {grown:.0f} MB in {seconds:.1f} s")
    assert grown < 400, f"peak memory grew {grown:.0f} MB"
    assert seconds < 60, seconds
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.size == (8000, 6000)
