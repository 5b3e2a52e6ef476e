"""The scoring job's flags, declared once: its own inputs, outputs and filters here, every `ScoreLongCLIP`
setting in `transforms.settings`. `--help`, the checks of each value, the Flex Template parameters and the flag
table in docs/flags.md are made from these declarations (`pipeline.cli.generated`).

Standard library and `transforms.settings` only, so that `--help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Optional

from pipeline.cli.kit import GCS_PATH, Group, values_of
from pipeline.io.formats import (
    DEFAULT_IMAGE_EXTENSIONS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PART_BYTES,
    DEFAULT_SAMPLES_PER_SHARD,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
)
from transforms.settings import (
    SETTINGS_CLASSES,
    BatchSettings,
    ImageSettings,
    InvalidSetting,
    ModelSettings,
    RecordFields,
    check_fields,
    setting,
)

SUBSCRIPTION = r"^projects/[^/]+/subscriptions/[^/]+$"
TOPIC = r"^projects/[^/]+/topics/[^/]+$"
TABLE = r"^([^:.]+[:.])?[A-Za-z0-9_]+\.[^:.]+$"
EXTENSIONS = r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*(,[A-Za-z0-9]+(\.[A-Za-z0-9]+)*)*$"  # jpg,png,seg.png


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """Where records come from: JSONL, WebDataset or Parquet files, or Pub/Sub messages (one JSON object each)."""

    input: Optional[str] = setting(
        None,
        "file or glob, local or gs://: JSONL (one JSON object per line), WebDataset .tar shards or Parquet "
        "(see --input_format)",
        label="Input files",
        param_type="GCS_READ_FILE",
        regex=GCS_PATH,
    )
    input_format: str = setting(
        "auto",
        "format of the --input files: jsonl, webdataset or parquet; auto: by the extension of --input "
        "(.tar: webdataset, .parquet: parquet, anything else: jsonl)",
        label="Input files format",
        choices=INPUT_FORMATS,
    )
    image_extensions: str = setting(
        ",".join(DEFAULT_IMAGE_EXTENSIONS),
        "WebDataset: the member extensions that hold a sample's image, comma-separated, the first present wins",
        label="WebDataset image extensions",
        regex=EXTENSIONS,
    )
    input_subscription: Optional[str] = setting(
        None,
        "Pub/Sub subscription projects/P/subscriptions/S; each message's data is one JSON object (needs --streaming)",
        label="Input Pub/Sub subscription",
        param_type="PUBSUB_SUBSCRIPTION",
        regex=SUBSCRIPTION,
    )
    input_topic: Optional[str] = setting(
        None,
        "Pub/Sub topic projects/P/topics/T, read through a temporary subscription (needs --streaming; "
        "messages published while the job is down are lost: prefer --input_subscription)",
        label="Input Pub/Sub topic",
        param_type="PUBSUB_TOPIC",
        regex=TOPIC,
    )
    id_label: Optional[str] = setting(
        None,
        "Pub/Sub attribute holding a unique id per message; Dataflow drops repeats of an id (Dataflow only)",
        label="Pub/Sub id attribute",
        regex=r"^[^\s]+$",
    )
    timestamp_attribute: Optional[str] = setting(
        None,
        "Pub/Sub attribute holding the event time (ms since epoch or RFC 3339; default: publish time); "
        "a message without a valid one is dead-lettered as bad_timestamp",
        label="Pub/Sub timestamp attribute",
        regex=r"^[^\s]+$",
    )
    attributes_key: Optional[str] = setting(
        None,
        "keep each Pub/Sub message's attributes on its record, as an object under this field",
        label="Attributes field",
        regex=r"^[^\s]+$",
    )
    max_line_bytes: int = setting(
        DEFAULT_MAX_LINE_BYTES,
        "--input lines longer than this many bytes go to the dead letter as line_too_long (their first KiB kept)",
        label="Line length limit (bytes)",
        minimum=1,
    )
    input_part_bytes: int = setting(
        DEFAULT_PART_BYTES,
        "--input files are read in parts of at most this many bytes, each in one go (in parallel on Dataflow); "
        "with --resume, each part's outputs are written as soon as it is done",
        label="Input part size (bytes)",
        minimum=1,
    )
    retry_failed: bool = setting(
        False,
        "batch: --input is an earlier run's scored JSONL or Parquet files; score again only the rows that failed "
        "with image_timeout, image_unavailable or inference_failed, keep the others as they were, and write a "
        "complete new output (refused when that run's scoring settings differ, from its run record)",
        label="Retry failed rows",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not re.fullmatch(EXTENSIONS, self.image_extensions):
            raise InvalidSetting(
                "image_extensions",
                f"must be extensions separated by commas, e.g. jpg,png; got {self.image_extensions!r}",
            )


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Where scored records and dead-letter entries go: files, BigQuery tables, a Pub/Sub topic."""

    output: Optional[str] = setting(
        None,
        "path prefix of the scored JSONL files, local or gs://: <output>-SSSSS-of-NNNNN.jsonl; in streaming "
        "one per window, <output>-START-END-00000-of-00001.jsonl, its bounds in UTC (20261206T101500Z); "
        "WebDataset shards: <output>-NNNNN.tar",
        label="Output files prefix",
        param_type="GCS_WRITE_FILE",
        regex=GCS_PATH,
    )
    output_format: str = setting(
        "jsonl",
        "format of the --output files: jsonl, parquet (<output>-SSSSS-of-NNNNN.parquet, typed columns; batch "
        "jobs only) or webdataset (WebDataset input, batch jobs: the samples as new shards <output>-NNNNN.tar, "
        "every member copied, the scores in each sample's .json); dead-letter files are JSONL either way",
        label="Output files format",
        choices=OUTPUT_FORMATS,
    )
    samples_per_shard: Optional[int] = setting(
        None,
        f"--output_format webdataset: samples per output shard (default {DEFAULT_SAMPLES_PER_SHARD}, as "
        "img2dataset's); the last shard holds the rest",
        label="Samples per WebDataset shard",
        minimum=1,
    )
    output_table: Optional[str] = setting(
        None,
        "BigQuery table PROJECT:DATASET.TABLE (or DATASET.TABLE with --project) for scored rows; created if "
        "missing, its columns checked if not (docs/bigquery.md)",
        label="Output BigQuery table",
        param_type="BIGQUERY_TABLE",
        regex=TABLE,
    )
    window_seconds: float = setting(
        60.0,
        "streaming: scored and dead-letter files are written per window of this many seconds",
        label="Window length (seconds)",
        above=0,
    )
    dead_letter: Optional[str] = setting(
        None,
        "path prefix of dead-letter JSONL files (default: <output>.dead_letter, unless a dead-letter topic "
        "or table is given)",
        label="Dead-letter files prefix",
        param_type="GCS_WRITE_FILE",
        regex=GCS_PATH,
    )
    dead_letter_topic: Optional[str] = setting(
        None,
        "Pub/Sub topic projects/P/topics/T for dead-letter entries, one JSON message each",
        label="Dead-letter Pub/Sub topic",
        param_type="PUBSUB_TOPIC",
        regex=TOPIC,
    )
    dead_letter_table: Optional[str] = setting(
        None,
        "BigQuery table for dead-letter entries (default: <output_table>_dead_letter, when only "
        "--output_table is given)",
        label="Dead-letter BigQuery table",
        param_type="BIGQUERY_TABLE",
        regex=TABLE,
    )
    resume: bool = setting(
        False,
        "local batch jobs over --input files: write each input part's outputs once it is done "
        "(<output>-part-ID.jsonl) and skip the parts whose outputs are there, so a stopped job run again with the "
        "same flags goes on where it stopped",
        label="Resume",
    )
    max_failed_fraction: float = setting(
        1.0,
        "batch: end with exit code 3 (and hints at the usual causes) when more than this fraction of the records "
        "read failed or were dead-lettered; 1.0: only when all of them did",
        label="Failed fraction for exit code 3",
        minimum=0,
        maximum=1,
    )
    overwrite: bool = setting(
        False,
        "batch jobs: first remove the files an earlier run wrote under --output, --dead_letter and "
        "--rejected_output with this job's own names (<prefix>-SSSSS-of-NNNNN.jsonl or .parquet, window files, "
        "<prefix>-part-ID.jsonl, <output>.resume/), and nothing else; without it such files stop the job. With "
        "--resume, only what this run cannot go on from is removed",
        label="Overwrite earlier outputs",
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class FilterOptions:
    """Which scored rows to keep: the rest, failed rows included, go to a rejected output with the cutoff used."""

    keep_min_score: Optional[float] = setting(
        None,
        "keep rows scored at least this; the rest, failed rows included, go to the rejected output",
        label="Keep rows scoring at least",
        minimum=0,
        maximum=1,
    )
    keep_top_fraction: Optional[float] = setting(
        None,
        "batch: keep this fraction of the scored rows, those with the highest scores (an exact cutoff over "
        "all of them; rows tied at the cutoff are all kept); the rest go to the rejected output",
        label="Keep the top fraction",
        above=0,
        maximum=1,
    )
    rejected_output: Optional[str] = setting(
        None,
        "path prefix of the files of rejected rows, in --output_format, each with <output_key>_cutoff (default, "
        "with a filter: <output>.rejected)",
        label="Rejected files prefix",
        param_type="GCS_WRITE_FILE",
        regex=GCS_PATH,
    )
    rejected_table: Optional[str] = setting(
        None,
        "BigQuery table for rejected rows, with a cutoff column (default, with a filter: <output_table>_rejected)",
        label="Rejected BigQuery table",
        param_type="BIGQUERY_TABLE",
        regex=TABLE,
    )

    def __post_init__(self) -> None:
        check_fields(self)


def filtering(options: Any) -> bool:
    """Whether the parsed flags (argparse or Beam options) ask for a filter."""
    return options.keep_min_score is not None or options.keep_top_fraction is not None


GROUPS = (
    Group("input (exactly one)", "Input", InputOptions),
    Group("output (at least one)", "Output", OutputOptions),
    Group("filter (optional)", "Filter", FilterOptions),
    Group("model", "Model", ModelSettings),
    Group("batching", "Batching", BatchSettings),
    Group("records", "Records", RecordFields),
    Group("images", "Images", ImageSettings),
)
assert {group.declaration for group in GROUPS} >= set(SETTINGS_CLASSES)


def settings_from(namespace: argparse.Namespace) -> dict[type, Any]:
    """Each settings class of `transforms` built from the parsed flags of the same names."""
    return {cls: cls(**values_of(namespace, cls)) for cls in SETTINGS_CLASSES}
