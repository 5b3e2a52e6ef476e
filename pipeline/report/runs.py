"""The run records of the outputs a report reads: shown at the top of the page and kept in summary.json, and
when the rows come from runs whose scoring differs (another checkpoint, precision, weights, input sizes...),
a warning there and in the log: their scores are not comparable."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from typing import Any, Iterable, Mapping, Optional, Sequence

from pipeline.runs import compare, store
from transforms.inputs.locations import HIDDEN
from transforms.settings import InvalidSetting

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


# The flags a report can take from the run records of its input when they are not given: where the job found
# the images and captions, and what it named the score.
FROM_RECORDS = {"image_key": "RecordFields", "text_key": "RecordFields", "output_key": "RecordFields",
                "image_root": "ImageSettings"}  # fmt: skip


def records_of(paths: Iterable[str]) -> dict[str, Any]:
    """The run records of the input files, by prefix; none when they cannot be read (`of_files` says why)."""
    try:
        return store.records_for(paths)[0]
    except (OSError, ValueError):
        return {}


def settings_from_records(settings: Any, given: Sequence[str], records: Mapping[str, Mapping[str, Any]]) -> Any:
    """`settings` (the report's) with each of FROM_RECORDS that `given` (the flags on the command line) lacks
    set as the input's runs all had it: a Parquet job's `--image_key image` need not be said again for its
    thumbnails. A value the records hide (a signed URL's token) is not taken."""
    taken: dict[str, Any] = {}
    for name, group in FROM_RECORDS.items():
        values = {json.dumps(_setting(run, group, name)) for run in records.values()}
        if name in given or len(values) != 1:
            continue
        value = json.loads(values.pop())
        if value is None or (isinstance(value, str) and HIDDEN in value):
            continue
        taken[name] = value
    fields = {name: value for name, value in taken.items() if FROM_RECORDS[name] == "RecordFields"}
    images = {name: value for name, value in taken.items() if FROM_RECORDS[name] == "ImageSettings"}
    changed = {
        name: value
        for name, value in taken.items()
        if value != getattr(settings.fields if name in fields else settings.images, name)
    }
    if changed:
        _LOGGER.info(
            "From the input's run record: %s", " ".join(f"--{name} {value}" for name, value in changed.items())
        )
    try:
        return dataclasses.replace(
            settings,
            fields=dataclasses.replace(settings.fields, **fields),
            images=dataclasses.replace(settings.images, **images),
        )
    except InvalidSetting as exc:  # a record edited by hand, or from another version
        _LOGGER.warning("Not taken from the input's run record: --%s: %s", exc.name, exc.message)
        return settings


def _setting(run: Mapping[str, Any], group: str, name: str) -> Any:
    settings = run.get("settings")
    values = settings.get(group) if isinstance(settings, Mapping) else None
    return values.get(name) if isinstance(values, Mapping) else None


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
