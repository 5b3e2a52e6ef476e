"""`python -m pipeline.report`: a Beam pipeline computes the figures over every scored row; this process then
writes summary.json, the charts and report.html from them (a few kilobytes, whatever the number of rows)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipeline.cli.kit import UsageError, beam_options
from pipeline.io.parts import InputPart, InputProblem, plan_parts
from pipeline.report import charts, page, runs
from pipeline.report.options import ReportSettings, check_flags
from pipeline.report.read import ReadScoredRows
from pipeline.report.statistics import ScoreStatistics
from transforms.reasons import first_line

_LOGGER = logging.getLogger(__name__)

DATA_FILE = "report_data.json"
SUMMARY_FILE = "summary.json"
PAGE_FILE = "report.html"


def parse(argv: Optional[Sequence[str]]) -> tuple[ReportSettings, PipelineOptions, list[InputPart]]:
    """The report's settings, the Beam options (local runner by default) and the parts of the input files.

    Raises `UsageError` for a bad flag, an unknown one, or an input that matches no file.
    """
    settings, parser, beam_args = check_flags(argv)
    options = beam_options(beam_args, parser, streaming_runner=False)
    try:
        parts = plan_parts(settings.report.input)
    except InputProblem as exc:
        raise UsageError(f"--input: {exc}") from None
    parts = [part for part in parts if not _inside(part.path, settings.report.output)]
    parts = [part for part in parts if not part.path.endswith(runs.store.RECORD_SUFFIX)]  # run records: no rows
    if not parts:
        raise UsageError(f"--input: no file matches {settings.report.input} outside the --output folder")
    given = [arg[2:].partition("=")[0] for arg in (sys.argv[1:] if argv is None else argv) if arg.startswith("--")]
    return runs.settings_from_records(settings, given, runs.records_of(part.path for part in parts)), options, parts


def check_output(folder: str) -> None:
    """The report folder exists or can be made, and a file can be written in it; else `UsageError`."""
    probe = FileSystems.join(folder, f".report-write-check-{os.getpid()}")
    try:
        _make_folder(folder)
        with FileSystems.create(probe) as stream:
            stream.write(b"")
        FileSystems.delete([probe])
    except Exception as exc:  # noqa: BLE001 - read-only, a file in the way, no access: the user's to fix
        raise UsageError(f"--output: cannot write in {folder}: {_why(exc)}; choose a folder you can write to") from None


def _why(exc: BaseException) -> str:
    """The first OS error under Beam's wrappers, in the system's words."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return first_line(exc) if exc is not None else "it failed"


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is in `folder`: a report folder that the input glob matches is not read as input."""
    if "://" not in folder:
        path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path.startswith(folder.rstrip("/") + "/")


def run(
    argv: Optional[Sequence[str]] = None,
    save_main_session: bool = False,
    test_pipeline: Optional[beam.Pipeline] = None,
) -> dict:
    """Runs the report and returns the summary (as written to summary.json). Raises `UsageError`, also for an
    output folder that cannot be written (checked before the pipeline runs)."""
    settings, options, parts = parse(argv)
    check_output(settings.report.output)
    options.view_as(SetupOptions).save_main_session = save_main_session
    output = settings.report.output
    pipeline = test_pipeline or beam.Pipeline(options=options)
    (
        pipeline
        | "ReadScoredRows" >> ReadScoredRows(parts, settings.fields, settings.report.max_line_bytes)
        | "ScoreStatistics" >> ScoreStatistics(settings.fields, settings.images, settings.report.rows_shown)
        | "ToJson" >> beam.Map(json.dumps)
        | "WriteData" >> beam.io.WriteToText(FileSystems.join(output, DATA_FILE), num_shards=1, shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    with FileSystems.open(FileSystems.join(output, DATA_FILE)) as stream:
        data = json.loads(stream.read())
    data["runs"] = runs.of_files(sorted({part.path for part in parts}))
    data["summary"].update(runs=data["runs"]["records"], runs_differ=data["runs"]["differences"])
    write_report(data, output, settings.report.input, settings.images.image_root)
    return data["summary"]


def write_report(data: dict, output: str, source: str, image_root: Optional[str] = None) -> None:
    """summary.json, the charts as PNG files and report.html, into the folder `output`; what the page warns
    about is logged too."""
    for warning in page.notices(data, image_root):
        _LOGGER.warning("%s", warning)
    _write(output, SUMMARY_FILE, (json.dumps(data["summary"], indent=2) + "\n").encode("utf-8"))
    pictures = charts.draw_all(data)
    for name, png in pictures.items():
        _write(output, name, png)
    _write(output, PAGE_FILE, page.render(data, pictures, source, image_root).encode("utf-8"))
    _LOGGER.info("Report written: %s", FileSystems.join(output, PAGE_FILE))


def _write(folder: str, name: str, content: bytes) -> None:
    with FileSystems.create(FileSystems.join(folder, name)) as stream:
        stream.write(content)


def _make_folder(folder: str) -> None:
    if "://" in folder:
        return  # object stores have no folders
    os.makedirs(folder, exist_ok=True)
