"""The scoring job: JSONL, WebDataset or Parquet files, or Pub/Sub in; scored JSONL or Parquet files and/or a
BigQuery table out, plus a dead letter (files, a Pub/Sub topic and/or a BigQuery table) for what cannot be read
as a record.

`run(argv)` is the whole job: the command line parsed (`pipeline.cli.command`), the plan made
(`pipeline.preflight`), the graph built (`pipeline.build`), run. `run_plan` runs a plan made elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import nullcontext
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

from pipeline import local_streaming
from pipeline.build import build
from pipeline.cli.command import parse
from pipeline.io import manifests, outputs, resume
from pipeline.outcome import conclude, summarize
from pipeline.plan import JobPlan
from pipeline.preflight import preflight
from pipeline.progress import ProgressMonitor
from pipeline.runs import store

_LOGGER = logging.getLogger(__name__)


def run(
    argv: Optional[Sequence[str]] = None,
    save_main_session: bool = False,
    test_pipeline: Optional[beam.Pipeline] = None,
    wait: bool = True,
    progress_interval_secs: Optional[float] = 10.0,
) -> PipelineResult:
    """Runs the job `argv` describes and returns its result (counts are in its metrics: `outcome.summarize`).

    Before anything runs, the flags and everything the environment decides are checked (`UsageError`). With
    `wait` it returns when the job ends: a batch job when all input is done, a streaming job when cancelled;
    without, it returns the running job (e.g. to cancel a streaming job later). A local batch job reports its
    progress every `progress_interval_secs` (None: never) while it runs: see `pipeline.progress`.
    """
    plan = preflight(parse(argv), save_main_session=save_main_session)
    result = run_plan(plan, test_pipeline, wait=wait, progress_interval_secs=progress_interval_secs)
    if wait and plan.run_record is not None:  # the command's `outcome.report` does this, and logs the counts
        conclude(result, plan, summarize(result), 0)
    return result


def run_plan(
    plan: JobPlan,
    test_pipeline: Optional[beam.Pipeline] = None,
    *,
    wait: bool = True,
    progress_interval_secs: Optional[float] = 10.0,
) -> PipelineResult:
    """Builds and runs `plan` (see `run`): what it removes first (leftovers, and with --overwrite an earlier run's
    outputs) is removed, then its run record written beside the outputs (`running`)."""
    if plan.remove_first:
        _LOGGER.info("Removing %s", outputs.described(plan.remove_first))
        outputs.remove(plan.remove_first)
    if plan.run_record is not None:
        store.write_all(plan.destinations, plan.run_record, finished=False)
    if plan.resume:
        return _run_part_by_part(plan)
    pipeline = test_pipeline or beam.Pipeline(options=plan.beam)
    reports = plan.files is not None and plan.local and progress_interval_secs
    total_bytes = plan.files.total_bytes() if plan.files else None
    # A local batch job runs inside `pipeline.run()`: the monitor's thread reports while it does.
    with ProgressMonitor(total_bytes, progress_interval_secs) if reports else nullcontext() as monitor:
        build(pipeline, plan, monitor.folder if monitor else None)
        reads = local_streaming.prepare(pipeline)  # Pub/Sub reads that Ctrl-C stops on the local runner
        try:
            result = pipeline.run()
            if reads:
                result = local_streaming.LocalStreamingResult(result, reads)
            if wait:
                result.wait_until_finish()
        except BaseException:
            if plan.local and plan.files is not None:
                _remove_leftovers(plan)
            raise
    return result


def _remove_leftovers(plan: JobPlan) -> None:
    """What a failed local batch job's file sinks leave (Beam's `beam-temp-*` folders), removed at once."""
    destinations = plan.destinations
    for prefix in filter(None, (destinations.output, destinations.dead_letter, destinations.rejected_output)):
        try:
            outputs.remove(outputs.find(prefix).leftovers)
        except OSError as exc:  # the failure above is what matters; the next run removes them
            _LOGGER.warning("Could not remove the temporary files under %s: %s", prefix, exc)


def _run_part_by_part(plan: JobPlan) -> PipelineResult:
    """--resume: one local pipeline per input part, each ending with the part's files in place, so a job
    stopped at any point loses at most the part it was on. (Beam's local runner runs a pipeline stage by
    stage, so within one pipeline no part would be done before all are read.)"""
    results = []
    todo, output, dead_letter = plan.files.todo, plan.destinations.output, plan.destinations.dead_letter
    if plan.resume_manifest:  # none in a dry run, which lists no outputs
        manifests.write_job(output, json.loads(plan.resume_manifest))
    for number, part in enumerate(todo, 1):
        manifests.clear(part, output, dead_letter)  # what an earlier attempt at the part left
        pipeline = beam.Pipeline(options=plan.beam)
        build(pipeline, dataclasses.replace(plan, source=plan.files.only(part)))
        try:
            result = pipeline.run()
            result.wait_until_finish()
            manifests.commit(part, output, dead_letter, resume.lines_read(result))
        except BaseException:
            _discard(part, output, dead_letter)
            raise
        results.append(result)
        _LOGGER.info("Part %d of %d done: %s, bytes %d to %d", number, len(todo), part.path, part.start, part.end)
    return resume.PartByPartResult(results)


def _discard(part, output: str, dead_letter: str) -> None:
    """What a part that did not get done wrote (the next run reads the part again anyway)."""
    try:
        manifests.clear(part, output, dead_letter)
    except OSError as exc:  # the failure that stopped the part is what matters
        _LOGGER.warning("Could not remove what the unfinished part %s left: %s", part.path, exc)
