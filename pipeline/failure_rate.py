"""When nothing worked: a batch job whose records all failed (or more than `--max_failed_fraction` of them) ends
with exit code 3 and hints at the usual causes; a streaming job warns every minute in which every record
failed.

The hints compare `--image_key` and `--text_key` with the field names of the first few records each worker
read, which `NoteFields` keeps as counters (namespace `fields_seen`, one per name): they reach the launcher
from every runner, Dataflow included, with the job's other counters.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Iterable, Mapping, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from pipeline.io import tar
from transforms import reasons
from transforms.outputs import OutputFields
from transforms.settings import ImageSettings, RecordFields

_LOGGER = logging.getLogger(__name__)

EXIT_NOTHING_WORKED = 3
FIELDS_NAMESPACE = "fields_seen"
RECORDS_NOTED = 5  # per worker (DoFn instance): the first records' field names
FIELDS_NOTED = 50  # per record, at most
_LOOKS_LIKE_IMAGE = re.compile(r"image|img|url|path|file|jpe?g|png|picture|photo", re.IGNORECASE)
_LOOKS_LIKE_TEXT = re.compile(r"text|caption|prompt|description|alt|title|sentence", re.IGNORECASE)


class NoteFields(beam.DoFn):
    """Passes records through; counts the field names of the first `RECORDS_NOTED` it sees."""

    def setup(self) -> None:
        self._left = RECORDS_NOTED

    def process(self, record: dict) -> Iterable[dict]:
        if self._left > 0:
            self._left -= 1
            for name in list(record)[:FIELDS_NOTED]:
                Metrics.counter(FIELDS_NAMESPACE, str(name)[:100]).inc()
        yield record


def fields_seen(result: Any) -> dict[str, int]:
    """Field name → how many of the first records noted had it, from the job's committed counters."""
    seen: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(FIELDS_NAMESPACE))["counters"]:
        name = counter.key.metric.name
        seen[name] = seen.get(name, 0) + (counter.committed or 0)
    return seen


def verdict(
    counts: Mapping[str, int],
    max_failed_fraction: float,
    fields: RecordFields,
    images: ImageSettings,
    seen: Mapping[str, int],
) -> tuple[int, list[str]]:
    """Exit code 3 and the lines that say why, when more than `max_failed_fraction` of the records read failed
    or were dead-lettered, or all of them did; else 0 and no lines."""
    read = counts.get("read", 0)
    not_worked = counts.get("failed", 0) + counts.get("dead_lettered", 0)
    if read == 0 or not (not_worked >= read or not_worked / read > max_failed_fraction):
        return 0, []
    share = (
        "all"
        if not_worked >= read
        else f"{not_worked / read:.1%}, more than --max_failed_fraction {max_failed_fraction:g}"
    )
    lines = [f"Nothing worked: {not_worked} of {read} records failed or were dead-lettered ({share}); exit code 3"]
    return EXIT_NOTHING_WORKED, lines + [f"Hint: {hint}" for hint in hints(counts, fields, images, seen)]


def hints(counts: Mapping[str, int], fields: RecordFields, images: ImageSettings, seen: Mapping[str, int]) -> list[str]:
    """What to check, for each kind of failure in `counts`, most common first."""
    found: list[tuple[int, str]] = []

    def add(count: int, text: str) -> None:
        if count:
            found.append((count, text))

    def failed(*codes: str) -> int:
        return sum(counts.get(f"failed_{code}", 0) for code in codes)

    for flag, key, codes in (
        ("--image_key", fields.image_key, (reasons.IMAGE_MISSING, reasons.IMAGE_WRONG_TYPE)),
        ("--text_key", fields.text_key, (reasons.TEXT_MISSING, reasons.TEXT_WRONG_TYPE, reasons.TEXT_EMPTY)),
    ):
        # A key the first records lack is named whatever failed (a record fails with its first reason only).
        absent = bool(seen) and key not in seen
        add(counts.get("failed", 0) if absent else failed(*codes), _field_hint(flag, key, seen))
    where = (
        f"under --image_root {images.image_root!r}"
        if images.image_root
        else f"relative to the working directory {os.getcwd()!r} (no --image_root)"
    )
    count = failed(reasons.IMAGE_NOT_FOUND)
    add(
        count,
        f"--image_root: {count} images were not found, {where}: pass the folder (or URI prefix) the image "
        "paths are relative to",
    )
    count = failed(reasons.IMAGE_TIMEOUT, reasons.IMAGE_UNAVAILABLE)
    add(
        count,
        f"{count} remote images could not be read in time or were unavailable: check that their hosts answer "
        "(from the workers), raise --http_timeout_secs if they are slow, then score just those rows again with "
        "--retry_failed --input <this output's files>",
    )
    count = failed(reasons.IMAGE_NOT_ALLOWED)
    add(count, f"--allowed_image_prefixes: {count} images lie outside the allowed locations")
    count = failed(reasons.IMAGE_UNREADABLE, reasons.IMAGE_UNDECODABLE, reasons.IMAGE_TOO_LARGE)
    add(
        count,
        f"{count} images could not be read or decoded, or were too large: check their access rights and "
        f"that --image_key {fields.image_key!r} holds images (--max_image_bytes and --max_image_pixels are "
        "the limits)",
    )
    count = failed(reasons.INFERENCE_FAILED, reasons.SCORE_NOT_FINITE)
    add(
        count,
        f"the model failed on {count} records: try --precision fp32, a smaller --max_batch_size or "
        "--device cpu (each record's error names the exception)",
    )
    compressed = counts.get(f"dead_lettered_{tar.TAR_COMPRESSED}", 0)
    add(
        compressed,
        f"{compressed} shards named .tar are compressed (the dead letter says how): decompress them (gunzip, "
        "zstd -d, ...) into .tar files and score those",
    )
    damaged = sum(value for name, value in counts.items() if name.startswith("dead_lettered_tar_")) - compressed
    add(
        damaged,
        f"{damaged} parts or members of WebDataset shards could not be read (damaged, cut short, sparse or "
        "without a key): the dead letter names each shard, its byte range and the samples lost",
    )
    count = counts.get("dead_lettered", 0) - compressed - damaged
    add(
        count,
        f"{count} lines or messages were not records (JSON objects) and went to the dead letter: is --input "
        "in the format --input_format says (jsonl, webdataset or parquet)?",
    )
    return [text for _, text in sorted(found, key=lambda item: -item[0])]


def _field_hint(flag: str, key: str, seen: Mapping[str, int]) -> str:
    """`--image_key` or `--text_key` against the field names of the first records."""
    names = ", ".join(sorted(seen)) or "none noted"
    if seen and key not in seen:
        pattern = _LOOKS_LIKE_IMAGE if flag == "--image_key" else _LOOKS_LIKE_TEXT
        guess = next((name for name in sorted(seen) if pattern.search(name) and name != key), None)
        what = "image's path or URL" if flag == "--image_key" else "caption"
        example = f", e.g. {flag} {guess}" if guess else ""
        return (
            f"{flag} {key!r}: the first records have no such field, only {names}: pass the one with the {what}{example}"
        )
    return (
        f"{flag} {key!r}: records have nothing usable there (missing, null, empty or not text); the first "
        f"records' fields: {names}"
    )


class WarnWhenAllFail(beam.PTransform):
    """Streaming: a warning for each `window_seconds` (of arrival) in which records came and none was scored.

    Returns the tally of each such window (`{"failed": {reason: count}}`), for tests and alerts."""

    def __init__(self, fields: RecordFields, window_seconds: float = 60.0):
        super().__init__()
        self._reason = OutputFields.of(fields).reason
        self._window_seconds = window_seconds

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "StampArrival" >> beam.Map(lambda row: beam.window.TimestampedValue(row, time.time()))
            | "Windows" >> beam.WindowInto(beam.window.FixedWindows(self._window_seconds))
            | "Reasons" >> beam.Map(_reason_of, self._reason)
            | "Tally" >> beam.CombineGlobally(_Tally()).without_defaults()
            | "Warn" >> beam.FlatMap(_warn_if_none_scored, self._window_seconds)
        )


def _reason_of(row: Mapping[str, Any], field: str) -> Optional[str]:
    reason = row.get(field)
    return None if reason is None else str(reason)


class _Tally(beam.CombineFn):
    def create_accumulator(self) -> dict:
        return {"scored": 0, "failed": {}}

    def add_input(self, tally: dict, reason: Optional[str]) -> dict:
        if reason is None:
            tally["scored"] += 1
        else:
            tally["failed"][reason] = tally["failed"].get(reason, 0) + 1
        return tally

    def merge_accumulators(self, tallies: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for tally in tallies:
            merged["scored"] += tally["scored"]
            for reason, count in tally["failed"].items():
                merged["failed"][reason] = merged["failed"].get(reason, 0) + count
        return merged

    def extract_output(self, tally: dict) -> dict:
        return tally


def _warn_if_none_scored(tally: dict, window_seconds: float) -> list[dict]:
    if tally["scored"] or not tally["failed"]:
        return []
    total = sum(tally["failed"].values())
    by_reason = ", ".join(
        f"{reason}: {count}" for reason, count in sorted(tally["failed"].items(), key=lambda i: -i[1])
    )
    _LOGGER.warning(
        "Nothing worked in the last %gs: all %d records failed (%s); see docs/reliability.md, When nothing works",
        window_seconds,
        total,
        by_reason,
    )
    return [{"failed": dict(tally["failed"])}]
