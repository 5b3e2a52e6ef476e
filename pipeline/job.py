"""The batch scoring job: JSONL files in, scored JSONL shards and a dead letter out."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import records
from pipeline.options import ScoreLongCLIPOptions
from pipeline.sinks import WriteJsonLines
from transforms import CheckpointFormatError, CheckpointNotFoundError, ScoreLongCLIP, resolve_checkpoint
from transforms import score as score_transform
from transforms.longclip_model import pick_device, read_architecture

# The default DirectRunner first tries to download Prism, which fails offline.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"


def parse_options(argv: Optional[Sequence[str]]) -> PipelineOptions:
    """Parses our flags (so `--help` and bad values fail early and clearly) plus every Beam option."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        allow_abbrev=False,  # Beam's own parsing does not expand abbreviations: both must agree
        description="Score image/long-caption alignment with LongCLIP on Apache Beam.",
        epilog="Every standard Beam pipeline option (--runner, --project, --region, --temp_location, ...) "
        f"is accepted too. Without --runner the job runs locally on the {DEFAULT_LOCAL_RUNNER}.",
    )
    ScoreLongCLIPOptions._add_argparse_args(parser)
    known, _ = parser.parse_known_args(argv)
    if not known.input or not known.output:
        parser.error("--input and --output are required")
    if known.min_batch_size < 1 or known.max_batch_size < known.min_batch_size:
        parser.error("need 1 <= --min_batch_size <= --max_batch_size")
    options = PipelineOptions(argv)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:
        parser.error(
            f"unknown flag(s) {', '.join('--' + name for name in sorted(unknown))}: "
            "neither this job's nor a Beam pipeline option"
        )
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = DEFAULT_LOCAL_RUNNER
    if standard.runner in StandardOptions.LOCAL_RUNNERS:
        _check_locally(parser, known.model, known.device)
    return options


def _check_locally(parser: argparse.ArgumentParser, model: str, device: Optional[str]) -> None:
    """Local workers run on this machine, so a bad --model or --device fails here, before the job starts."""
    try:
        pick_device(device)
    except RuntimeError as exc:  # unknown device strings and CUDA requested where there is none
        parser.error(f"--device: {exc}")
    try:
        read_architecture(resolve_checkpoint(model))
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        parser.error(f"--model: {exc}")


def build(pipeline: beam.Pipeline, options: ScoreLongCLIPOptions) -> None:
    """Adds read → parse → ScoreLongCLIP → write, and the dead letter, to `pipeline`."""
    lines = pipeline | "ReadLines" >> beam.io.ReadFromTextWithFilename(options.input, coder=coders.BytesCoder())
    parsed = lines | "Parse" >> records.ParseJsonLines()
    scored = parsed.records | "ScoreLongCLIP" >> ScoreLongCLIP(
        options.model,
        device=options.device,
        precision=options.precision,
        image_key=options.image_key,
        text_key=options.text_key,
        output_key=options.output_key,
        image_root=options.image_root,
        min_batch_size=options.min_batch_size,
        max_batch_size=options.max_batch_size,
        max_batch_duration_secs=options.max_batch_duration_secs,
        share_model_across_processes=options.share_model_across_processes,
        max_image_bytes=options.max_image_bytes,
        max_image_pixels=options.max_image_pixels,
        http_timeout_secs=options.http_timeout_secs,
    )
    scored | "WriteScored" >> WriteJsonLines(options.output)
    dead_letter = options.dead_letter or f"{options.output}.dead_letter"
    parsed[records.DEAD_LETTER] | "WriteDeadLetter" >> WriteJsonLines(dead_letter)


def run(
    argv: Optional[Sequence[str]] = None,
    save_main_session: bool = False,
    test_pipeline: Optional[beam.Pipeline] = None,
) -> PipelineResult:
    """Runs the job to completion and returns its result (counts are in its metrics, see `summarize`)."""
    options = parse_options(argv)
    options.view_as(SetupOptions).save_main_session = save_main_session
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, options.view_as(ScoreLongCLIPOptions))
    result = pipeline.run()
    result.wait_until_finish()
    return result


def summarize(result: PipelineResult) -> dict[str, int]:
    """Committed counters of the job: read, dead_lettered[_<reason>], scored, failed[_<reason>], truncated."""
    counts: dict[str, int] = {}
    for namespace in (records.METRICS_NAMESPACE, score_transform.METRICS_NAMESPACE):
        for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
            name = counter.key.metric.name
            counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts
