"""`python -m pipeline.report`: a Beam pipeline computes the figures over every scored row; this process then
writes summary.json, the charts and report.html from them (a few kilobytes, whatever the number of rows)."""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipeline.cli.kit import UsageError, beam_options
from pipeline.report import charts, page, runs
from pipeline.report.options import ReportSettings, check_flags
from pipeline.report.statistics import ReadScoredRows, ScoreStatistics

_LOGGER = logging.getLogger(__name__)

DATA_FILE = "report_data.json"
SUMMARY_FILE = "summary.json"
PAGE_FILE = "report.html"


def parse(argv: Optional[Sequence[str]]) -> tuple[ReportSettings, PipelineOptions, list[str]]:
    """The report's settings, the Beam options (local runner by default) and the input files.

    Raises `UsageError` for a bad flag, an unknown one, or an input that matches no file.
    """
    settings, parser, beam_args = check_flags(argv)
    options = beam_options(beam_args, parser, streaming_runner=False)
    try:
        files = [m.path for m in FileSystems.match([settings.report.input])[0].metadata_list]
    except Exception as exc:  # a bad scheme, no access
        raise UsageError(f"--input: cannot list {settings.report.input}: {exc}") from None
    files = [path for path in files if not _inside(path, settings.report.output)]
    files = [path for path in files if not path.endswith(runs.store.RECORD_SUFFIX)]  # run records: no rows
    if not files:
        raise UsageError(f"--input: no file matches {settings.report.input}")
    return settings, options, files


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
    """Runs the report and returns the summary (as written to summary.json). Raises `UsageError`."""
    settings, options, files = parse(argv)
    options.view_as(SetupOptions).save_main_session = save_main_session
    output = settings.report.output
    _make_folder(output)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    (
        pipeline
        | "ReadScoredRows" >> ReadScoredRows(files)
        | "ScoreStatistics" >> ScoreStatistics(settings.fields, settings.images, settings.report.rows_shown)
        | "ToJson" >> beam.Map(json.dumps)
        | "WriteData" >> beam.io.WriteToText(FileSystems.join(output, DATA_FILE), num_shards=1, shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    with FileSystems.open(FileSystems.join(output, DATA_FILE)) as stream:
        data = json.loads(stream.read())
    data["runs"] = runs.of_files(files)
    data["summary"].update(runs=data["runs"]["records"], runs_differ=data["runs"]["differences"])
    write_report(data, output, settings.report.input)
    return data["summary"]


def write_report(data: dict, output: str, source: str) -> None:
    """summary.json, the charts as PNG files and report.html, into the folder `output`."""
    _write(output, SUMMARY_FILE, (json.dumps(data["summary"], indent=2) + "\n").encode("utf-8"))
    pictures = charts.draw_all(data)
    for name, png in pictures.items():
        _write(output, name, png)
    _write(output, PAGE_FILE, page.render(data, pictures, source).encode("utf-8"))
    _LOGGER.info("Report written: %s", FileSystems.join(output, PAGE_FILE))


def _write(folder: str, name: str, content: bytes) -> None:
    with FileSystems.create(FileSystems.join(folder, name)) as stream:
        stream.write(content)


def _make_folder(folder: str) -> None:
    if "://" in folder:
        return  # object stores have no folders
    try:
        FileSystems.mkdirs(folder)
    except OSError:  # Beam's local mkdirs refuses a folder that exists
        pass
