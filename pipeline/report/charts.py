"""The report's charts, drawn with matplotlib (Agg, no display, no network) as PNG bytes.

Each takes the figures `ScoreStatistics` computed (see `statistics.py`), never the rows themselves.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from pipeline.report import parts
from pipeline.report.statistics import LENGTH_BIN_TOKENS, LENGTH_BINS, LENGTH_SCORE_BINS, SCORE_BINS
from pipeline.report.text import neutralised
from transforms.inputs.tokenizer import LONGCLIP_CONTEXT_LENGTH as CONTEXT_LENGTH

BLUE, ORANGE, GREY = "#3b6ea8", "#d9822b", "#8a8f98"
MAX_BARS = 60
MAX_BARS_REASONS = 15  # failure reasons drawn one by one; the rest share a bar
LABEL_CHARS = 48


def _figure(width: float = 7.0, height: float = 3.6) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _nothing(figure: Figure, title: str, message: str) -> bytes:
    axes = figure.add_subplot()
    axes.set_title(title, loc="left")
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color=GREY, transform=axes.transAxes)
    axes.set_axis_off()
    return _png(figure)


def _score_range(histogram: np.ndarray) -> tuple[int, int]:
    """First and last non-empty bins of the score histogram."""
    filled = np.flatnonzero(histogram)
    return int(filled[0]), int(filled[-1])


def histogram_chart(data: dict) -> bytes:
    """Scored rows per score, over the range the scores cover, with the percentiles p10, p50 and p90."""
    title = "Scores of scored rows"
    histogram = np.asarray(data["score_histogram"])
    figure = _figure()
    if not histogram.sum():
        return _nothing(figure, title, "No scored rows")
    first, last = _score_range(histogram)
    group = max(1, int(np.ceil((last - first + 1) / MAX_BARS)))
    start = first - first % group
    counts = np.add.reduceat(histogram[start : last + 1], np.arange(0, last + 1 - start, group))
    edges = (start + np.arange(len(counts)) * group) / SCORE_BINS
    axes = figure.add_subplot()
    axes.bar(edges, counts, width=group / SCORE_BINS, align="edge", color=BLUE, edgecolor="white", linewidth=0.5)
    percentiles = data["summary"]["percentiles"]
    for name in ("p10", "p50", "p90"):
        axes.axvline(percentiles[name], color=ORANGE, linestyle="--", linewidth=1)
        axes.annotate(
            name, (percentiles[name], 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
            textcoords="offset points", color=ORANGE, fontsize=9,
        )  # fmt: skip
    axes.set_title(title, loc="left")
    axes.set_xlabel("score")
    axes.set_ylabel("rows")
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def retention_chart(data: dict) -> bytes:
    """The fraction of scored rows a `--keep_min_score` threshold keeps, with the keep-top thresholds marked."""
    title = "Rows kept at each threshold"
    histogram = np.asarray(data["score_histogram"])
    figure = _figure()
    total = histogram.sum()
    if not total:
        return _nothing(figure, title, "No scored rows")
    first, last = _score_range(histogram)
    kept = histogram[::-1].cumsum()[::-1] / total  # kept[i]: fraction scoring at least bin i's lower edge
    thresholds = np.arange(first, last + 2) / SCORE_BINS
    fractions = np.append(kept[first : last + 1], 0.0)
    axes = figure.add_subplot()
    axes.step(thresholds, fractions, where="post", color=BLUE, linewidth=2)
    for fraction, score in data["summary"]["keep_top_thresholds"].items():
        if fraction in ("0.1", "0.3", "0.5", "0.7", "0.9"):
            axes.plot([score], [float(fraction)], "o", color=ORANGE, markersize=5)
            axes.annotate(
                f"top {float(fraction):.0%}: ≥ {score:.4f}", (score, float(fraction)), xytext=(6, 2),
                textcoords="offset points", fontsize=9, color="#333333",
            )  # fmt: skip
    axes.set_ylim(0, 1.05)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    axes.set_title(title, loc="left")
    axes.set_xlabel("keep rows scoring at least (--keep_min_score)")
    axes.set_ylabel("scored rows kept")
    axes.grid(alpha=0.3)
    return _png(figure)


def length_chart(data: dict) -> bytes:
    """Scored rows by caption length and score (shade), with the mean score per length and LongCLIP's limit."""
    title = "Score against caption length"
    by_length = np.asarray(data["by_length"], dtype=float)
    figure = _figure()
    if not by_length.sum():
        return _nothing(figure, title, "No scored rows with a text caption")
    rows_per_length = by_length.sum(axis=1)
    used = np.flatnonzero(rows_per_length)
    last_length = int(used[-1]) + 1
    used_scores = np.flatnonzero(by_length.sum(axis=0))
    low, high = int(used_scores[0]), int(used_scores[-1]) + 1
    axes = figure.add_subplot()
    x_edges = np.arange(last_length + 1) * LENGTH_BIN_TOKENS
    y_edges = np.arange(low, high + 1) / LENGTH_SCORE_BINS
    shade = np.ma.masked_equal(by_length[:last_length, low:high].T, 0)
    mesh = axes.pcolormesh(x_edges, y_edges, shade, cmap="Blues", norm=LogNorm(vmin=1))
    figure.colorbar(mesh, ax=axes, label="rows", pad=0.01)
    centres = (used + 0.5) * LENGTH_BIN_TOKENS
    means = np.asarray(data["length_score_sum"])[used] / rows_per_length[used]
    axes.plot(centres, means, "-o", color=ORANGE, markersize=3, linewidth=1.5, label="mean score")
    if CONTEXT_LENGTH <= x_edges[-1] + LENGTH_BIN_TOKENS:
        axes.axvline(CONTEXT_LENGTH, color=GREY, linestyle="--", linewidth=1)
        axes.annotate(
            f"{CONTEXT_LENGTH}: longer captions are cut", (CONTEXT_LENGTH, 0), xycoords=("data", "axes fraction"),
            xytext=(3, 4), textcoords="offset points", color="#555555", fontsize=8,
        )  # fmt: skip
    if last_length == LENGTH_BINS:
        axes.set_xlabel(f"caption length, tokens with start and end ({(LENGTH_BINS - 1) * LENGTH_BIN_TOKENS}+ last)")
    else:
        axes.set_xlabel("caption length, tokens with start and end")
    axes.set_ylabel("score")
    axes.set_title(title, loc="left")
    axes.legend(loc="upper right", fontsize=9)
    return _png(figure)


def spread_chart(data: dict) -> bytes:
    """How far apart the chunk scores of one caption lie (highest minus lowest), by caption length: where long
    captions drift from their image, their chunks disagree."""
    title = "Spread of chunk scores within a caption, by caption length"
    by_length = np.asarray(data["parts"]["spread_by_length"], dtype=float)
    figure = _figure()
    if not by_length.sum():
        return _nothing(figure, title, "No caption was scored in two chunks or more")
    rows_per_length = by_length.sum(axis=1)
    used = np.flatnonzero(rows_per_length)
    last_length = int(used[-1]) + 1
    high = int(np.flatnonzero(by_length.sum(axis=0))[-1]) + 1
    axes = figure.add_subplot()
    x_edges = np.arange(last_length + 1) * parts.LENGTH_BIN_TOKENS
    y_edges = np.arange(high + 1) * parts.SPREAD_MAX / parts.SPREAD_BINS
    shade = np.ma.masked_equal(by_length[:last_length, :high].T, 0)
    mesh = axes.pcolormesh(x_edges, y_edges, shade, cmap="Blues", norm=LogNorm(vmin=1))
    figure.colorbar(mesh, ax=axes, label="captions", pad=0.01)
    centres = (used + 0.5) * parts.LENGTH_BIN_TOKENS
    means = np.asarray(data["parts"]["spread_sum"])[used] / rows_per_length[used]
    axes.plot(centres, means, "-o", color=ORANGE, markersize=3, linewidth=1.5, label="mean spread")
    last = (parts.LENGTH_BINS - 1) * parts.LENGTH_BIN_TOKENS
    more = f" ({last}+ last)" if last_length == parts.LENGTH_BINS else ""
    axes.set_xlabel(f"caption length, tokens with start and end{more}")
    axes.set_ylabel("highest minus lowest chunk score")
    axes.set_title(title, loc="left")
    axes.legend(loc="upper left", fontsize=9)
    return _png(figure)


def failures_chart(data: dict) -> bytes:
    """Rows that could not be scored, by reason: the `MAX_BARS_REASONS` most frequent, then the others in one bar."""
    title = "Rows not scored, by reason"
    summary = data["summary"]
    failed: dict = summary["failed"]
    unlisted = summary.get("failed_other", 0)
    ranked = sorted(failed.items(), key=lambda item: (-item[1], item[0]))
    bars = [(_label(reason), count) for reason, count in ranked[:MAX_BARS_REASONS]]
    rest = ranked[MAX_BARS_REASONS:]
    if rest or unlisted:
        more = "more " if unlisted else ""
        bars.append((f"other {len(rest):,} {more}reasons", sum(count for _, count in rest) + unlisted))
    figure = _figure(height=max(2.2, 0.9 + 0.32 * len(bars)))
    if not bars:
        return _nothing(figure, title, "Every row was scored")
    bars.reverse()  # the most frequent at the top
    axes = figure.add_subplot()
    drawn = axes.barh(range(len(bars)), [count for _, count in bars], color=ORANGE)
    axes.set_yticks(range(len(bars)), labels=[label for label, _ in bars])
    axes.bar_label(drawn, labels=[f"{count:,}" for _, count in bars], padding=3, fontsize=9)
    axes.set_title(title, loc="left")
    axes.set_xlabel("rows")
    axes.margins(x=0.15)
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def _label(reason: str) -> str:
    """A reason as a tick label: short, inert, and with `$` escaped so matplotlib draws it, not math."""
    text = neutralised(reason)
    text = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")


SPREAD_CHART = "chunk_spread_by_length.png"
CHARTS = {
    "histogram.png": histogram_chart,
    "retention.png": retention_chart,
    "score_by_length.png": length_chart,
    "failures.png": failures_chart,
}


def draw_all(data: dict) -> dict[str, bytes]:
    """Every chart, by file name; the spread of chunk scores only when captions were scored in parts."""
    drawn = {name: draw(data) for name, draw in CHARTS.items()}
    if (data.get("parts") or {}).get("rows"):
        drawn[SPREAD_CHART] = spread_chart(data)
    return drawn
