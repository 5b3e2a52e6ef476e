"""`--resume`: a batch job's outputs written part by part, so that a stopped job can go on where it stopped.

The job runs one local pipeline per input part (`parts.InputPart`); each writes the part's own output
files, `<output>-part-<id>.jsonl` and `<dead_letter>-part-<id>.jsonl`, to temporary names and renames
them into place when its bundle ends, which on the local runner is once the part is wholly read and
scored (the dead-letter file first; the scored file, even when empty, last: its presence means the
part is done). A part whose pipeline fails, or whose job is killed, leaves no file under its final
name, so a rerun reads it again and writes it whole. So every line is in the outputs exactly once,
however often the job is stopped, as long as the input files do not change.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricResults
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline.io import records
from pipeline.io.parts import InputPart

_LOGGER = logging.getLogger(__name__)

SCORED = "scored"
DEAD = "dead"
PARTS_DONE = "parts_done"  # counter: parts whose files this run wrote


def part_file(prefix: str, part: InputPart) -> str:
    return f"{prefix}-part-{part.id}.jsonl"


def parts_to_do(parts: Sequence[InputPart], output: str) -> tuple[InputPart, ...]:
    """The parts without their scored file under `output`, found in one listing."""
    found = FileSystems.match([f"{output}-part-*.jsonl"])[0].metadata_list
    names = {FileSystems.split(meta.path)[1] for meta in found}
    return tuple(part for part in parts if FileSystems.split(part_file(output, part))[1] not in names)


def unresumable_outputs(output: str) -> list[str]:
    """Files a run without --resume wrote under `output` (`<output>-SSSSS-of-NNNNN.jsonl`): a resumed run
    beside them would give some lines twice."""
    found = FileSystems.match([f"{output}-*.jsonl"])[0].metadata_list
    return sorted(meta.path for meta in found if re.search(r"-\d{5}-of-\d{5}\.jsonl$", meta.path))


class WritePart(beam.PTransform):
    """Writes the `(SCORED or DEAD, record or entry)` elements of one part's pipeline into its part files."""

    def __init__(self, part: InputPart, output: str, dead_letter: str):
        super().__init__()
        self._part = part
        self._prefixes = {SCORED: output, DEAD: dead_letter}

    def expand(self, tagged: beam.PCollection):
        return tagged | "WritePartFiles" >> beam.ParDo(_WritePartFiles(self._part, self._prefixes))


class _WritePartFiles(beam.DoFn):
    def __init__(self, part: InputPart, prefixes: dict[str, str]):
        self._part = part
        self._prefixes = prefixes

    def setup(self) -> None:
        self._done = Metrics.counter(records.METRICS_NAMESPACE, PARTS_DONE)

    def start_bundle(self) -> None:
        self._open: dict[str, tuple[str, object]] = {}

    def process(self, element: tuple[str, dict]) -> None:
        kind, value = element
        if kind not in self._open:
            self._open[kind] = self._create(kind)
        self._open[kind][1].write(records.to_json(value).encode("utf-8") + b"\n")

    def finish_bundle(self) -> None:
        if not self._open:
            return
        if SCORED not in self._open:  # every line dead-lettered: the empty file still says "done"
            self._open[SCORED] = self._create(SCORED)
        for kind in (DEAD, SCORED):  # the scored file last: its presence means the part is done
            if kind in self._open:
                temporary, stream = self._open.pop(kind)
                stream.close()
                FileSystems.rename([temporary], [part_file(self._prefixes[kind], self._part)])
        self._done.inc()

    def _create(self, kind: str) -> tuple[str, object]:
        folder, name = FileSystems.split(part_file(self._prefixes[kind], self._part))
        temporary = FileSystems.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
        return temporary, FileSystems.create(temporary)


class PartByPartResult(PipelineResult):
    """The pipelines of a resumed run, one per part, as one finished result: their metrics add up."""

    def __init__(self, results: Sequence[PipelineResult]):
        super().__init__(PipelineState.DONE)
        self._results = tuple(results)

    def wait_until_finish(self, duration=None):
        return self.state

    def cancel(self):
        return self.state

    def metrics(self) -> MetricResults:
        return _AllMetrics([result.metrics() for result in self._results])


class _AllMetrics(MetricResults):
    def __init__(self, each: list[MetricResults]):
        self._each = each

    def query(self, filter=None) -> dict[str, list]:
        merged: dict[str, list] = {self.COUNTERS: [], self.DISTRIBUTIONS: [], self.GAUGES: []}
        for metrics in self._each:
            for kind, found in metrics.query(filter).items():
                merged.setdefault(kind, []).extend(found)
        return merged
