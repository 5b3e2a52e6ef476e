"""report.html as a person sees it: opened in headless Chromium, nothing fetched, nothing broken, all shown."""

import os
import shutil
from pathlib import Path

import pytest

from tests.support.browser import save_screenshot, visit

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
    assert text == "no imageimage_not_found" and fits, "the reason, whole, inside its box"
    assert tooltip.startswith("image_not_found: ") and "no_such_image" in tooltip
    assert seen.screenshot.startswith(b"\x89PNG") and len(seen.screenshot) > 50_000


def test_charts_are_also_png_files(scored_report):
    _, folder, _ = scored_report
    for name in ("histogram.png", "retention.png", "score_by_length.png", "failures.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG"), name
