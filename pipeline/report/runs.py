"""The run records of the outputs a report reads: shown at the top of the page and kept in summary.json, and
when the rows come from runs whose scoring differs (another checkpoint, precision, weights, input sizes...),
a warning there and in the log: their scores are not comparable."""

from __future__ import annotations

import html
import logging
from typing import Any, Iterable, Optional

from pipeline.runs import compare, store

_LOGGER = logging.getLogger(__name__)


def of_files(paths: Iterable[str]) -> dict[str, Any]:
    """`{"records": {prefix: record}, "differences": [...], "without_record": [paths]}` for the input files."""
    try:
        records, without = store.records_for(paths)
    except (OSError, ValueError) as exc:  # an unreadable record must not stop the report
        _LOGGER.warning("Could not read the run records beside the input files: %s", exc)
        records, without = {}, []
    differences = compare.score_differences(records) if len(records) > 1 else []
    for difference in differences:
        _LOGGER.warning("The rows come from runs that score differently: %s", compare.describe(difference, None))
    return {"records": records, "differences": differences, "without_record": without}


def section(runs: Optional[dict]) -> str:
    """The page's first section: one line per run, and a warning when their scores are not comparable."""
    if not runs or not (runs["records"] or runs["without_record"]):
        return ""
    items = "".join(f"<li>{_run(prefix, record)}</li>" for prefix, record in sorted(runs["records"].items()))
    if runs["without_record"]:
        items += f'<li class="muted">{len(runs["without_record"]):,} input file(s) without a run record</li>'
    warning = ""
    if runs["differences"]:
        lines = "".join(f"<li>{html.escape(compare.describe(d))}</li>" for d in runs["differences"])
        warning = (
            '<div class="card" id="runs-differ" style="border-color:#b54708;background:#fffaeb">'
            "<b>These rows come from runs that score differently: their scores are not comparable</b>"
            f"<ul>{lines}</ul></div>"
        )
    return f'<h2>Runs</h2><ul id="runs">{items}</ul>{warning}'


def _run(prefix: str, record: dict) -> str:
    checkpoint = record.get("checkpoint") or {}
    scoring = record.get("scoring") or {}
    sha = checkpoint.get("sha256")
    revision = f", Hub revision {checkpoint['hub_revision'][:12]}" if checkpoint.get("hub_revision") else ""
    precision = scoring.get("precision_used") or f"{scoring.get('precision')} (decided on the workers)"
    counts = record.get("counts") or {}
    done = (
        f"; {counts.get('read', 0):,} read, {counts.get('scored', 0):,} scored, {counts.get('failed', 0):,} failed"
        if counts
        else ""
    )
    text = (
        f"<code>{html.escape(prefix)}</code>: {html.escape(str(record.get('status')))}, "
        f"{html.escape(str(record.get('started_at')))} to {html.escape(str(record.get('ended_at')))}; "
        f"model {html.escape(str(checkpoint.get('model')))} (sha256 {html.escape(sha[:12] if sha else 'unknown')}"
        f"{html.escape(revision)}); {html.escape(str(precision))}, weights {html.escape(str(scoring.get('weights')))}, "
        f"{scoring.get('image_resolution')} px, {scoring.get('context_length')} tokens{html.escape(done)}"
    )
    return text
