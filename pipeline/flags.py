"""The job's flags: its own input and output options, and every `ScoreLongCLIP` setting.

Declared once, as dataclass fields (`transforms.settings.setting`); the argparse flags, the Flex Template
parameters (`dataflow/flex_template_metadata.json`) and the README's flag table are generated from
them (`python -m pipeline.flags --write`, or `make generated`; a test checks both files are current).
Standard library and `transforms`' settings only (which import neither torch nor Beam), so `--help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from typing import Any, NamedTuple, Optional

from transforms import (
    SETTINGS_CLASSES,
    BatchSettings,
    ImageSettings,
    InvalidSetting,
    ModelSettings,
    RecordFields,
    check_fields,
    setting,
    value_type,
)

# The default DirectRunner first tries to download Prism, which fails offline.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"
DEFAULT_LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"

GCS_PATH = r"^gs://[^/]+(/.*)?$"
SUBSCRIPTION = r"^projects/[^/]+/subscriptions/[^/]+$"
TOPIC = r"^projects/[^/]+/topics/[^/]+$"
TABLE = r"^([^:.]+[:.])?[A-Za-z0-9_]+\.[^:.]+$"
INPUT_FORMATS = ("auto", "jsonl", "webdataset", "parquet")
OUTPUT_FORMATS = ("jsonl", "parquet")
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
        "jpg,jpeg,png,webp,gif,bmp,tif,tiff",
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
        16 * 1024 * 1024,
        "--input lines longer than this many bytes go to the dead letter as line_too_long (their first KiB kept)",
        label="Line length limit (bytes)",
        minimum=1,
    )
    input_part_bytes: int = setting(
        4 * 1024 * 1024,
        "--input files are read in parts of at most this many bytes, each in one go (in parallel on Dataflow); "
        "with --resume, each part's outputs are written as soon as it is done",
        label="Input part size (bytes)",
        minimum=1,
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
        "one set per window, <output>-[START, END)-SSSSS-of-NNNNN.jsonl",
        label="Output files prefix",
        param_type="GCS_WRITE_FILE",
        regex=GCS_PATH,
    )
    output_format: str = setting(
        "jsonl",
        "format of the --output files: jsonl, or parquet (<output>-SSSSS-of-NNNNN.parquet, typed columns; "
        "batch jobs only); dead-letter files are JSONL either way",
        label="Output files format",
        choices=OUTPUT_FORMATS,
    )
    output_table: Optional[str] = setting(
        None,
        "BigQuery table PROJECT:DATASET.TABLE (or DATASET.TABLE with --project) for scored rows; created if "
        "missing, its columns checked if not (README, BigQuery)",
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
        "path prefix of the JSONL files of rejected rows, each with <output_key>_cutoff (default, with a "
        "filter: <output>.rejected)",
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


class Group(NamedTuple):
    title: str  # the --help section
    template_group: str  # the Flex Template's groupName
    declaration: type
    only: tuple[str, ...] = ()  # when set, just these fields (for another command sharing the declarations)


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


def declared_fields(groups: typing.Sequence[Group] = GROUPS) -> list[tuple[Group, dataclasses.Field, type, bool]]:
    """Every flag: its group, its field, its value type and whether it may be None."""
    out = []
    for group in groups:
        hints = typing.get_type_hints(group.declaration)
        for field in dataclasses.fields(group.declaration):
            if group.only and field.name not in group.only:
                continue
            kind, optional = value_type(hints[field.name])
            out.append((group, field, kind, optional))
    return out


class UsageError(ValueError):
    """A flag, or the combination of flags, cannot work; the message names the flag and the fix."""


def argument_parser() -> argparse.ArgumentParser:
    """The job's own flags (Beam's options are accepted beside them)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        allow_abbrev=False,  # Beam's own parsing does not expand abbreviations: both must agree
        description="Score image/long-caption alignment with LongCLIP on Apache Beam.",
        epilog="Every standard Beam pipeline option (--runner, --streaming, --project, --region, --temp_location, "
        f"...) is accepted too. Without --runner the job runs locally on the {DEFAULT_LOCAL_RUNNER} "
        f"(the {DEFAULT_LOCAL_STREAMING_RUNNER} with --streaming).",
    )
    add_arguments(parser)
    return parser


def check_flags(argv: Optional[typing.Sequence[str]]) -> argparse.Namespace:
    """Parses this job's flags (Beam's are left for Beam) and checks each value and their combination.

    Raises `UsageError`; `--help` and values of the wrong type exit through argparse.
    """
    known, _ = argument_parser().parse_known_args(argv)
    if sum(bool(source) for source in (known.input, known.input_subscription, known.input_topic)) != 1:
        raise UsageError("pass exactly one of --input, --input_subscription and --input_topic")
    if not known.output and not known.output_table:
        raise UsageError("pass --output (files), --output_table (BigQuery), or both")
    if known.input_format not in ("auto", "jsonl") and not known.input:
        raise UsageError(f"--input_format {known.input_format} is for --input files; Pub/Sub messages are JSON")
    if known.output_format != "jsonl" and not known.output:
        raise UsageError(f"--output_format {known.output_format} is the format of --output files: pass --output")
    try:
        for group in GROUPS:  # each declaration checks its own fields
            group.declaration(**{f.name: getattr(known, f.name) for f in dataclasses.fields(group.declaration)})
    except InvalidSetting as exc:
        raise UsageError(f"--{exc.name}: {exc.message}") from None
    if (known.rejected_output or known.rejected_table) and not filtering(known):
        raise UsageError(
            "--rejected_output and --rejected_table need a filter: add --keep_min_score or --keep_top_fraction"
        )
    return known


def add_arguments(parser: argparse.ArgumentParser, groups: typing.Sequence[Group] = GROUPS) -> None:
    """Adds every declared flag of `groups` to `parser`, grouped as in `--help`."""
    sections = {group.title: parser.add_argument_group(group.title) for group in groups}
    for group, field, kind, _ in declared_fields(groups):
        meta = field.metadata
        help_text = meta["help"] + (f" (default: {field.default})" if _shows_default(field) else "")
        flag = f"--{field.name}"
        if kind is bool:
            sections[group.title].add_argument(flag, action="store_true", help=help_text)
        else:
            sections[group.title].add_argument(
                flag, type=kind, default=field.default, choices=meta.get("choices"), help=help_text
            )


def switches() -> set[str]:
    """The flags that take no value."""
    return {f"--{field.name}" for _, field, kind, _ in declared_fields() if kind is bool}


def settings_from(options: Any) -> dict[type, Any]:
    """Each settings class of `transforms` built from the parsed flags of the same names."""
    return {cls: cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)}) for cls in SETTINGS_CLASSES}


def _shows_default(field: dataclasses.Field) -> bool:
    return field.default not in (None, False) and "(default:" not in field.metadata["help"]


def _default_text(field: dataclasses.Field) -> str:
    return "" if field.default is None or field.default is False else f"`{field.default}`"


def markdown_table() -> str:
    """The README's flag table."""
    rows = ["| flag | in Python | default | meaning |", "|---|---|---|---|"]
    for group, field, _, _ in declared_fields():
        meaning = field.metadata["help"].replace("|", "\\|")
        python = f"`{group.declaration.__name__}.{field.name}`" if group.declaration in SETTINGS_CLASSES else "job only"
        rows.append(f"| `--{field.name}` | {python} | {_default_text(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def flex_template_metadata() -> dict:
    """`dataflow/flex_template_metadata.json`: one optional parameter per flag, Dataflow's TemplateMetadata."""
    parameters = []
    for group, field, kind, _ in declared_fields():
        meta = field.metadata
        parameter: dict[str, Any] = {
            "name": field.name,
            "label": meta["label"],
            "helpText": meta["help"][0].upper() + meta["help"][1:] + ".",
            "isOptional": True,
            "regexes": [meta["regex"] or _regex(kind, meta)],
            "paramType": _param_type(kind, meta),
            "groupName": group.template_group,
        }
        if field.default is not None:
            parameter["defaultValue"] = str(field.default).lower() if kind is bool else str(field.default)
        if meta.get("choices"):
            parameter["enumOptions"] = [{"value": choice} for choice in meta["choices"]]
        parameters.append(parameter)
    return {
        "name": "LongCLIP image/caption scoring",
        "description": "Scores image / long-caption alignment with LongCLIP (`python -m pipeline`): JSONL, "
        "WebDataset or Parquet files, or Pub/Sub in; scored JSONL or Parquet files and/or a BigQuery table out, "
        "with a dead letter. Run on GPU workers with the template's image as sdk_container_image and the GPU as "
        "the parameter dataflow_service_options=worker_accelerator=type:...;count:1;install-nvidia-driver: the "
        "job then scores on CUDA with one shared model per worker (README, Running on Dataflow with GPUs).",
        "streaming": True,
        "supportsAtLeastOnce": True,
        "supportsExactlyOnce": True,
        "defaultStreamingMode": "STREAMING_MODE_EXACTLY_ONCE",
        "parameters": parameters,
    }


def _param_type(kind: type, meta: dict) -> str:
    if meta.get("choices"):
        return "ENUM"
    if meta["param_type"] != "TEXT":
        return meta["param_type"]
    return {bool: "BOOLEAN", int: "NUMBER", float: "NUMBER"}.get(kind, "TEXT")


def _regex(kind: type, meta: dict) -> str:
    if meta.get("choices"):
        return "^(" + "|".join(meta["choices"]) + ")$"
    if kind is bool:
        return "^(true|false)$"
    if kind is int:
        return "^[1-9][0-9]*$" if (meta.get("minimum") or 0) >= 1 else "^[0-9]+$"
    if kind is float:
        return r"^([0-9]+\.?[0-9]*|\.[0-9]+)$"
    return r"^[^\s]+$"


README_START = "<!-- flags: generated by `python -m pipeline.flags --write` from the declarations -->\n"
README_END = "<!-- /flags -->\n"
FLEX_TEMPLATE_METADATA = "dataflow/flex_template_metadata.json"


def flex_template_json() -> str:
    return json.dumps(flex_template_metadata(), indent=2, ensure_ascii=False) + "\n"


def readme_with_table(readme: str) -> str:
    """`readme` with the text between the flag-table markers replaced by `markdown_table()`."""
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return head + README_START + markdown_table() + README_END + tail


def main(argv: list[str]) -> int:
    """`--write` regenerates the README's flag table and the Flex Template metadata (run from the repo root)."""
    if argv != ["--write"]:
        sys.stderr.write("usage: python -m pipeline.flags --write\n")
        return 2
    with open("README.md", encoding="utf-8") as stream:
        readme = stream.read()
    with open("README.md", "w", encoding="utf-8") as stream:
        stream.write(readme_with_table(readme))
    with open(FLEX_TEMPLATE_METADATA, "w", encoding="utf-8") as stream:
        stream.write(flex_template_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
