"""`--retry_failed`: a batch job over an earlier run's scored files that scores again only the rows whose reason
may pass on another try (`image_timeout`, `image_unavailable`, `inference_failed`), keeps every other row as it
was, and writes a complete new output: every row of the earlier output once.

Before the job: the earlier run's records (`<prefix>.run.json` beside its files) are compared with this run's,
and any difference that changes scores refuses the job (`check_previous`). In the job: `SplitForRetry` strips
the fields the earlier scoring added from the rows to score again, and counts what it does.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.cli.kit import UsageError
from pipeline.io import records
from pipeline.runs import compare, store
from transforms import reasons
from transforms.outputs import OutputFields
from transforms.settings import RecordFields

_LOGGER = logging.getLogger(__name__)

RETRYABLE = (*reasons.TRANSIENT_CODES, reasons.INFERENCE_FAILED)
KEPT = "kept"
RETRIED, NOW_PASS, KEPT_COUNTER = "retry_retried", "retry_now_pass", "retry_kept"


def check_previous(plan: Any) -> None:
    """Refuses (`UsageError`) an `--input` that is not the scored files of earlier runs of this job, one scored
    with settings that change scores or with other record fields, or an `--output` that would overwrite it."""
    paths = sorted({part.path for part in plan.files.parts})
    try:
        previous, without = store.records_for(paths)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--retry_failed: cannot read the run records beside the --input files: {exc}") from None
    if without or not previous:
        raise UsageError(
            f"--retry_failed: {(without or paths)[0]} has no run record beside it (<prefix>{store.RECORD_SUFFIX}): "
            "--input must be the scored files of a run of this job, e.g. 'out/scored-*.jsonl'"
        )
    for prefix, record in sorted(previous.items()):
        _check_one(prefix, record, plan)
    _LOGGER.info(
        "Retry: the rows of %s that failed with %s are scored again; every other row is kept as it was",
        ", ".join(sorted(previous)),
        ", ".join(RETRYABLE),
    )


def _check_one(prefix: str, record: Mapping[str, Any], plan: Any) -> None:
    if (record.get("input") or {}).get("format") == "webdataset":
        raise UsageError(
            f"--retry_failed: {prefix} was scored from WebDataset shards, whose images its rows no longer hold: "
            "score the shards again instead"
        )
    # A --dry_run has no record of its own (it scores nothing): there is nothing to compare.
    ours = plan.run_record
    differences = compare.score_differences({"that run": record, "this run": ours}) if ours else []
    if differences:
        raise UsageError(
            f"--retry_failed: {prefix} was scored with other scoring settings ("
            + "; ".join(compare.describe(d) for d in differences)
            + f"): pass the flags that run used (its command is in {store.record_file(prefix)}), or score the "
            "original input again without --retry_failed"
        )
    fields = plan.scoring.fields
    before = (record.get("settings") or {}).get(type(fields).__name__, {})
    changed = [
        f"--{name} {value} (that run) vs {getattr(fields, name)}"
        for name, value in before.items()
        if hasattr(fields, name) and getattr(fields, name) != value
    ]
    if changed:
        raise UsageError(
            f"--retry_failed: {prefix} was written with other record fields ({', '.join(changed)}): pass the same "
            "ones, so that kept and scored rows have the same fields"
        )
    # An --output that is the output being retried is refused before this, with every --input that is some
    # output's own files (`pipeline.destinations.check_input`).


class SplitForRetry(beam.PTransform):
    """Rows of an earlier output → `(to score again, kept)`: a row is scored again when its reason is one of
    `RETRYABLE` and its image field still names an image (inline bytes are not kept in outputs), without the
    fields the scoring adds (score, reason, error, truncated, embeddings, cutoff); the rest are kept whole."""

    def __init__(self, fields: RecordFields):
        super().__init__()
        self._fields = fields

    def expand(self, rows: beam.PCollection):
        result = rows | "Split" >> beam.ParDo(_Split(self._fields)).with_outputs(KEPT, main="retry")
        return result.retry, result[KEPT]


class _Split(beam.DoFn):
    def __init__(self, fields: RecordFields):
        outputs = OutputFields(fields.output_key, embeddings=True)
        self._reason = outputs.reason
        self._added = frozenset((*outputs.names, outputs.cutoff))
        self._image_key = fields.image_key
        self._retried = Metrics.counter(records.METRICS_NAMESPACE, RETRIED)
        self._kept = Metrics.counter(records.METRICS_NAMESPACE, KEPT_COUNTER)

    def process(self, row: dict) -> Iterable:
        image = row.get(self._image_key)
        if row.get(self._reason) in RETRYABLE and isinstance(image, str) and image.strip():
            self._retried.inc()
            yield {key: value for key, value in row.items() if key not in self._added}
        else:
            self._kept.inc()
            yield beam.pvalue.TaggedOutput(KEPT, row)


def count_passed(row: dict, reason_field: str) -> dict:
    """Passes a row scored again through, counting it when it now has a score."""
    if row.get(reason_field) is None:
        Metrics.counter(records.METRICS_NAMESPACE, NOW_PASS).inc()
    return row


def rejoin(scored: beam.PCollection, kept: beam.PCollection, fields: RecordFields) -> beam.PCollection:
    """The complete output: the rows scored again (counted) and the rows kept."""
    again = scored | "CountNowPass" >> beam.Map(count_passed, OutputFields.of(fields).reason)
    return (again, kept) | "RetriedAndKept" >> beam.Flatten()


def log_counts(counts: Mapping[str, int]) -> None:
    logging.getLogger("pipeline").info(
        "Retry: %d rows scored again, %d of them now pass; %d rows kept as they were",
        counts.get(RETRIED, 0),
        counts.get(NOW_PASS, 0),
        counts.get(KEPT_COUNTER, 0),
    )
