"""report.html: one self-contained page (charts and thumbnails inline as data: URIs; no scripts, no fonts,
no requests), readable offline and safe to mail around."""

from __future__ import annotations

import base64
import html
from typing import Optional

from pipeline.report import runs
from pipeline.report.text import neutralised

CHART_TEXT = {  # the charts of every report, and their alternative text
    "histogram.png": "histogram of scores",
    "retention.png": "retention curve",
    "score_by_length.png": "score against caption length",
    "failures.png": "failures by reason",
}
SHOWN_PERCENTILES = ("p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f5f6f8; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 10px; }
.muted { color: #667085; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 10px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; } .card span { color: #667085; font-size: 12px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
td, th { border: 1px solid #e1e4ea; padding: 4px 9px; text-align: right; }
th { background: #eef1f5; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
.charts figure { margin: 0; background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 8px; }
.charts img { width: 100%; height: auto; display: block; }
.rows { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 10px; }
.row { display: flex; gap: 10px; background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 8px; }
.thumb { flex: 0 0 96px; height: 96px; display: flex; align-items: center; justify-content: center;
         background: #eef1f5; border-radius: 4px; overflow: hidden; }
.thumb img { width: 96px; height: 96px; object-fit: contain; }
.thumb.missing { color: #9a3412; font-size: 11px; text-align: center; padding: 4px; box-sizing: border-box;
  overflow-wrap: anywhere; overflow: hidden; }
.row .score { font-weight: 700; font-size: 15px; }
.row p { margin: 2px 0; font-size: 12px; overflow-wrap: anywhere; max-height: 8.4em; overflow: hidden; }
.row .where { color: #667085; font-size: 11px; }
mark { background: #fde68a; }
#least-supported .row p { max-height: 16em; }
.row p, .muted { unicode-bidi: isolate; }
.warning { background: #fff4e5; border: 1px solid #f5b971; border-radius: 8px; padding: 8px 12px; margin: 12px 0 0;
  font-size: 14px; overflow-wrap: anywhere; }
"""


def _number(value: Optional[float], digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _card(label: str, value: str) -> str:
    return f'<div class="card"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def _table(header: list[str], cells: list[str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
    return f"<table><tr>{head}</tr><tr>{body}</tr></table>"


def _chart(name: str, png: bytes, alt: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}" data-chart="{html.escape(name)}"></figure>'


def _text(value: Optional[str], default: str) -> str:
    """Text from the scored files for the page: inert (bidi and control characters shown as marks), escaped."""
    return html.escape(neutralised(value) if value is not None else default)


def _row(row: dict) -> str:
    return (
        f'<div class="row">{_picture(row)}<div><div class="score">{row["score"]:.4f}</div>'
        f"<p>{_text(row['caption'], '(no caption)')}</p>{_where(row)}</div></div>"
    )


def _picture(row: dict) -> str:
    """The row's thumbnail, or a few words on why there is none (the whole sentence is its tooltip)."""
    if row["thumbnail"]:
        return f'<div class="thumb"><img src="{row["thumbnail"]}" alt="thumbnail"></div>'
    note = _text(row.get("thumbnail_note"), "cannot be shown")
    return f'<div class="thumb missing" title="{_text(row["thumbnail_error"], "")}">no thumbnail<br>{note}</div>'


def _where(row: dict) -> str:
    where = f'<p class="where">{_text(row["image"], "(no image field)")}</p>'
    if row.get("source"):
        where += f'<p class="where">{_text(row["source"], "")}</p>'
    return where


def _parts_section(parts: Optional[dict], charts: dict[str, bytes]) -> str:
    """The least supported sentences and the spread of chunk scores: only when captions were scored in parts."""
    if not parts or not parts.get("rows"):
        return ""
    least = "".join(_least_supported(item) for item in parts["least_supported"])
    least = least or '<p class="muted">No caption had two sentences (or chunks) or more.</p>'
    spread = "".join(
        _chart(name, png, "spread of chunk scores by caption length")
        for name, png in charts.items()
        if name not in CHART_TEXT
    )
    return (
        "<h2>Least supported sentences: what to delete from a caption</h2>"
        '<p class="muted">Each is the sentence of its caption that scores lowest against the image, measured '
        "against the mean of the caption's other sentences (chunks, where no sentence scores were kept); one "
        f"per caption, the lowest first, out of {parts['rows']:,} captions scored in parts.</p>"
        f'<div class="rows" id="least-supported">{least}</div>'
        f'<h2>Chunk scores within a caption</h2><div class="charts">{spread}</div>'
    )


def _least_supported(item: dict) -> str:
    caption = f"{_text(item['before'], '')}<mark>{_text(item['sentence'], '')}</mark>{_text(item['after'], '')}"
    return (
        f'<div class="row">{_picture(item)}<div><div class="score">{item["gap"]:+.4f}</div>'
        f'<p class="where">sentence {item["score"]:.4f}, rest of the caption {item["rest"]:.4f}, '
        f"caption {item['row_score']:.4f}</p><p>{caption}</p>{_where(item)}</div></div>"
    )


def notices(data: dict, image_root: Optional[str] = None) -> list[str]:
    """What the reader of the page must know first: scores that are not scores, thumbnails that could not be
    found because relative paths do not resolve (usually a forgotten --image_root). Plain text."""
    summary = data["summary"]
    found = []
    invalid = summary.get("invalid_scores") or {}
    if invalid:
        examples = summary.get("invalid_score_examples") or {}
        kinds = "; ".join(
            f"{count:,} {kind}" + (f" (e.g. {examples[kind]})" if examples.get(kind) else "")
            for kind, count in invalid.items()
        )
        found.append(
            f"{sum(invalid.values()):,} rows have a {summary['output_key']} that is not a finite number in [0, 1]: "
            f"{kinds}. They are counted apart, not as scores."
        )
    # A row can be among both the lowest and the highest (when few rows were scored): counted once.
    shown = {
        (row["score"], row["image"], row["caption"], row.get("source")): row for row in data["lowest"] + data["highest"]
    }
    unresolved = sum(bool(row.get("unresolved")) for row in shown.values())
    if unresolved:
        where = (
            f"under --image_root={image_root}"
            if image_root
            else "in the working directory (no --image_root was given: pass the one the job had)"
        )
        found.append(f"{unresolved:,} of the {len(shown):,} rows shown have relative image paths, no file {where}.")
    return found


def render(data: dict, charts: dict[str, bytes], source: str, image_root: Optional[str] = None) -> str:
    """The page for the figures `data` (from `ScoreStatistics`) and the PNG `charts` (by file name)."""
    summary = data["summary"]
    failed = sum(summary["failed"].values()) + summary.get("failed_other", 0)
    invalid = sum((summary.get("invalid_scores") or {}).values())
    cards = [
        _card("rows", f"{summary['rows']:,}"),
        _card("scored", f"{summary['scored']:,}"),
        _card("not scored (failed)", f"{failed:,}"),
        _card("captions truncated", f"{summary['truncated']:,}"),
        _card("mean score", _number(summary["mean"])),
        _card("std", _number(summary["std"])),
        _card("min", _number(summary["min"])),
        _card("max", _number(summary["max"])),
    ]
    if summary["without_score"] or summary["unreadable_lines"] or invalid:
        cards.append(_card("rows without a score field", f"{summary['without_score']:,}"))
        cards.append(_card("scores not in [0, 1]", f"{invalid:,}"))
        cards.append(_card("unreadable lines", f"{summary['unreadable_lines']:,}"))
    banner = "".join(f'<p class="warning">{_text(text, "")}</p>' for text in notices(data, image_root))
    percentiles = summary["percentiles"]
    thresholds = summary["keep_top_thresholds"]
    tables = ""
    if percentiles:
        tables = (
            "<h2>Percentiles of scores</h2>"
            + _table(list(SHOWN_PERCENTILES), [_number(percentiles[name]) for name in SHOWN_PERCENTILES])
            + '<p class="muted">All 99 are in summary.json.</p>'
            + "<h2>Keep the top fraction: the score to cut at</h2>"
            + _table([f"top {float(f):.0%}" for f in thresholds], [_number(score) for score in thresholds.values()])
            + '<p class="muted">Rows scoring at or above the value make up that fraction of the scored rows: '
            "<code>--keep_top_fraction F</code> in the job, or <code>--keep_min_score</code> with the value.</p>"
        )
    figures = "".join(_chart(name, charts[name], alt) for name, alt in CHART_TEXT.items())
    lowest = "".join(_row(row) for row in data["lowest"]) or '<p class="muted">No scored rows.</p>'
    highest = "".join(_row(row) for row in data["highest"]) or '<p class="muted">No scored rows.</p>'
    key = _text(summary["output_key"], "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>LongCLIP score report</title><style>{_STYLE}</style></head>
<body><main>
<h1>LongCLIP score report</h1>
<div class="muted">{_text(source, "")} · field <code>{key}</code></div>
{banner}
{runs.section(data.get("runs"))}
<div class="cards">{"".join(cards)}</div>
{tables}
<h2>Charts</h2>
<div class="charts">{figures}</div>
<h2>Lowest-scoring rows: what a cutoff throws away first</h2>
<div class="rows" id="lowest">{lowest}</div>
<h2>Highest-scoring rows</h2>
<div class="rows" id="highest">{highest}</div>
{_parts_section(data.get("parts"), charts)}
</main></body></html>
"""
