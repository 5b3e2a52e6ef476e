"""report.html as a person sees it: opened in headless Chromium, nothing fetched, nothing broken, all shown."""

import os
import shutil
from pathlib import Path

import pytest

from pipeline.report.job import run
from tests.support.browser import save_screenshot, visit
from tests.support.cli import run_job
from tests.support.scored import make_scored_rows, write_jsonl
from transforms.testing.captions import CAPTIONS
from transforms.testing.datasets import img2dataset_sample, jpeg, write_shard

CHECK = """(() => {
  const box = (element) => { const r = element.getBoundingClientRect(); return [r.width, r.height]; };
  const shown = (img) => img.complete && img.naturalWidth > 0 && getComputedStyle(img).visibility === 'visible';
  return {
    charts: [...document.querySelectorAll('img[data-chart]')].map(img => [img.dataset.chart, shown(img), ...box(img)]),
    thumbnails: [...document.querySelectorAll('.thumb img')].map(img => [shown(img), ...box(img)]),
    placeholders: [...document.querySelectorAll('.thumb.missing')].map(div => [
      div.textContent, div.title, div.scrollWidth <= div.clientWidth && div.scrollHeight <= div.clientHeight]),
    rows: document.querySelectorAll('.row').length,
    scripts: document.scripts.length,
    external: [...document.querySelectorAll('[src], [href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(url => !url.startsWith('data:')),
  };
})()"""


@pytest.mark.browser
def test_report_renders_in_chromium_with_every_chart_and_thumbnail(scored_report, tmp_path):
    _, folder, _ = scored_report
    page = (folder / "report.html").resolve()
    seen = visit(page.as_uri(), CHECK)
    screenshot = save_screenshot(seen, tmp_path / "report.png")
    if os.environ.get("REPORT_SCREENSHOT"):  # where a person wants to look at it
        shutil.copy(screenshot, Path(os.environ["REPORT_SCREENSHOT"]))

    assert seen.console_errors == []
    assert [url for url in seen.requests if not url.startswith("data:")] == [page.as_uri()]
    checks = seen.checks
    assert checks["scripts"] == 0 and checks["external"] == []
    assert [chart[0] for chart in checks["charts"]] == [
        "histogram.png", "retention.png", "score_by_length.png", "failures.png",
    ]  # fmt: skip
    for name, loaded, width, height in checks["charts"]:
        assert loaded and width > 400 and height > 150, name
    assert checks["rows"] == 24  # 12 lowest, 12 highest
    assert len(checks["thumbnails"]) == 23 and len(checks["placeholders"]) == 1
    assert all(loaded and width == height == 96 for loaded, width, height in checks["thumbnails"])
    ((text, tooltip, fits),) = checks["placeholders"]
    assert text == "no thumbnailnot found" and fits, "a few words, whole, inside its box"
    assert tooltip.startswith("Not found: ") and "no_such_image.png does not exist" in tooltip
    assert seen.screenshot.startswith(b"\x89PNG") and len(seen.screenshot) > 50_000


def test_charts_are_also_png_files(scored_report):
    _, folder, _ = scored_report
    for name in ("histogram.png", "retention.png", "score_by_length.png", "failures.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG"), name


def _screenshot(seen, tmp_path, name: str) -> None:
    """Kept in `tmp_path`, and where a person wants to look at it (REPORT_SCREENSHOT_DIR)."""
    screenshot = save_screenshot(seen, tmp_path / name)
    if os.environ.get("REPORT_SCREENSHOT_DIR"):
        shutil.copy(screenshot, Path(os.environ["REPORT_SCREENSHOT_DIR"]) / name)


def _thumbnails_shown(report: Path, tmp_path, name: str) -> dict:
    seen = visit((report / "report.html").resolve().as_uri(), CHECK)
    _screenshot(seen, tmp_path, name)
    assert seen.console_errors == [] and seen.checks["scripts"] == 0 and seen.checks["external"] == []
    return seen.checks


@pytest.mark.browser
@pytest.mark.slow
def test_a_webdataset_jobs_report_shows_the_images_from_its_shards(tmp_path, longclip_checkpoint, good_images):
    """The job's rows name shard and sample (`__url__`, `__key__`); the report reads the members back."""
    names = ["rgb.jpg", "grey.png", "cmyk.jpg", "rgba.png", "palette.gif", "large_1800x1200.jpg"]
    members = []
    for number, name in enumerate(names):
        members += img2dataset_sample(f"{number:09d}", jpeg(good_images[name]), CAPTIONS[sorted(CAPTIONS)[number]])
    write_shard(tmp_path / "shards" / "00000.tar", members[: 3 * 3])
    write_shard(tmp_path / "shards" / "00001.tar", members[3 * 3 :])
    done = run_job(
        "--input", str(tmp_path / "shards" / "*.tar"), "--output", str(tmp_path / "out" / "scored"),
        "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = run(["--input", str(tmp_path / "out" / "scored-*.jsonl"), "--output", str(tmp_path / "report")])
    assert summary["scored"] == len(names)
    checks = _thumbnails_shown(tmp_path / "report", tmp_path, "webdataset-report.png")
    assert checks["rows"] == 2 * len(names) and checks["placeholders"] == []
    assert len(checks["thumbnails"]) == 2 * len(names)
    assert all(loaded and width == height == 96 for loaded, width, height in checks["thumbnails"])


@pytest.mark.browser
@pytest.mark.slow
def test_an_inline_bytes_parquet_jobs_report_shows_the_images_from_its_input(
    tmp_path, longclip_checkpoint, good_images
):
    """The output holds no image bytes; its rows name input file and row (`__url__`, `__row__`). The report
    takes the job's `--image_key` from its run record (the thumbnails said "no column 'image_path'" without
    the flag)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["rgb.png", "grey.webp", "rgba.png", "animated.gif", "la.png", "rgb.jpg", "large_1800x1200.jpg"]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": good_images[n].read_bytes(), "path": n} for n in names], image),
            "text": [CAPTIONS[sorted(CAPTIONS)[i]] for i in range(len(names))],
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    done = run_job(
        "--input", str(tmp_path / "data" / "*.parquet"), "--output", str(tmp_path / "out" / "scored"),
        "--image_key", "image", "--output_format", "parquet", "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = b"".join(path.read_bytes() for path in (tmp_path / "out").glob("scored-*.parquet"))
    assert good_images["rgb.png"].read_bytes()[50:120] not in written, "no image bytes in the job's output"
    argv = ["--input", str(tmp_path / "out" / "scored-*.parquet"), "--output", str(tmp_path / "report")]
    summary = run([*argv, "--rows_shown", "4"])  # --image_key image comes from the job's run record
    assert summary["scored"] == len(names)
    checks = _thumbnails_shown(tmp_path / "report", tmp_path, "parquet-report.png")
    assert checks["rows"] == 8 and checks["placeholders"] == []
    assert all(loaded and width == height == 96 for loaded, width, height in checks["thumbnails"])


@pytest.mark.browser
@pytest.mark.slow
def test_a_forgotten_image_root_is_said_on_the_page(tmp_path, good_images):
    rows = make_scored_rows(40, [name for name in sorted(good_images) if name != "tiny_1x1.png"], seed=9)
    write_jsonl(tmp_path / "in" / "scored.jsonl", rows)
    argv = ["--input", str(tmp_path / "in" / "*.jsonl"), "--rows_shown", "3"]
    run([*argv, "--output", str(tmp_path / "without")])
    page = (tmp_path / "without" / "report.html").read_text()
    assert "6 of the 6 rows shown have relative image paths, no file in the working directory" in page
    assert "pass the one the job had" in page
    checks = _thumbnails_shown(tmp_path / "without", tmp_path, "forgotten-image-root.png")
    assert len(checks["placeholders"]) == 6 and all(fits for _, _, fits in checks["placeholders"])
    assert {text for text, _, _ in checks["placeholders"]} == {"no thumbnailno --image_root given"}
    run([*argv, "--output", str(tmp_path / "with"), "--image_root", str(good_images["rgb.png"].parent)])
    page = (tmp_path / "with" / "report.html").read_text()
    assert "relative image paths" not in page and page.count('<div class="thumb"><img') == 6
