"""Flags of `python -m pipeline.report`: its own, and the record fields and image limits the job declares.

Standard library and `transforms`' settings only, so `--help` and flag errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional, Sequence

from pipeline.cli import kit
from pipeline.cli.kit import GCS_PATH, Group, UsageError, values_of
from pipeline.io.formats import DEFAULT_MAX_LINE_BYTES
from transforms.settings import ImageSettings, InvalidSetting, RecordFields, check_fields, setting


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What to read and where the report goes."""

    input: str = setting(
        None,
        "scored rows: JSONL files as the job writes them and/or Parquet files (.parquet), a file or glob, "
        "local or any Beam FileSystems URI (gs://...)",
        label="Scored files",
        regex=GCS_PATH,
    )
    output: str = setting(
        None,
        "folder for summary.json, report.html, report_data.json and the charts as PNG files (made if missing)",
        label="Report folder",
        regex=GCS_PATH,
    )
    rows_shown: int = setting(
        12,
        "how many of the lowest- and of the highest-scoring rows the page shows",
        label="Rows shown",
        minimum=1,
        maximum=500,
    )
    max_line_bytes: int = setting(
        DEFAULT_MAX_LINE_BYTES,
        "JSONL lines longer than this many bytes are counted as unreadable lines, not read",
        label="Line length limit (bytes)",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)


# The image settings a thumbnail needs; the rest (threads of the scoring job) do not apply.
# The record fields a report reads (whether the job kept embeddings does not matter to it).
RECORD_FIELDS = ("image_key", "text_key", "output_key")
THUMBNAIL_IMAGE_SETTINGS = (
    "image_root",
    "max_image_bytes",
    "max_image_pixels",
    "http_timeout_secs",
    "allowed_image_prefixes",
)

GROUPS = (
    Group("report", "Report", ReportOptions),
    Group("records", "Records", RecordFields, only=RECORD_FIELDS),
    Group("thumbnails", "Images", ImageSettings, only=THUMBNAIL_IMAGE_SETTINGS),
)


PROG = "python -m pipeline.report"


def argument_parser() -> kit.CommandParser:
    return kit.command_parser(
        PROG,
        "A report on scored rows: summary.json (counts, percentiles, keep-top thresholds) and report.html "
        "(histogram, retention curve, score by caption length, failures, lowest and highest rows).",
        "Every standard Beam pipeline option (--runner, --project, --temp_location, ...) is accepted too; "
        f"without --runner it runs locally on the {kit.DEFAULT_LOCAL_RUNNER}.",
        GROUPS,
    )


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """The checked flags, as the declarations that hold them."""

    report: ReportOptions
    fields: RecordFields
    images: ImageSettings


def check_flags(argv: Optional[Sequence[str]]) -> tuple[ReportSettings, argparse.ArgumentParser, list[str]]:
    """This command's settings, its parser, and the rest of `argv` (Beam's options). Raises `UsageError`."""
    parser = argument_parser()
    known, rest = parser.parse_known_args(argv)
    try:
        settings = ReportSettings(
            ReportOptions(**values_of(known, ReportOptions)),
            RecordFields(**values_of(known, RecordFields, RECORD_FIELDS)),
            ImageSettings(**values_of(known, ImageSettings, THUMBNAIL_IMAGE_SETTINGS)),
        )
    except InvalidSetting as exc:
        raise UsageError(f"--{exc.name}: {exc.message}") from None
    return settings, parser, rest
