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
from typing import NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricResults
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline import records
from pipeline.parts import InputPart
from pipeline.sources import part_of

_LOGGER = logging.getLogger(__name__)

SCORED = "scored"
DEAD = "dead"
PARTS_DONE = "parts_done"  # counter: parts whose files this run wrote


def part_file(prefix: str, part: InputPart) -> str:
    return f"{prefix}-part-{part.id}.jsonl"


class Progress(NamedTuple):
    """What a resumed run has left: the parts to read, and how many (and how many bytes) were done."""

    todo: tuple[InputPart, ...]
    done: int
    done_bytes: int


def progress(parts: Sequence[InputPart], output: str) -> Progress:
    """Which parts already have their scored file under `output`, found in one listing."""
    found = FileSystems.match([f"{output}-part-*.jsonl"])[0].metadata_list
    names = {FileSystems.split(meta.path)[1] for meta in found}
    todo = tuple(part for part in parts if FileSystems.split(part_file(output, part))[1] not in names)
    done = [part for part in parts if part not in todo]
    return Progress(todo, len(done), sum(part.end - part.start for part in done))


def unresumable_outputs(output: str) -> list[str]:
    """Files a run without --resume wrote under `output` (`<output>-SSSSS-of-NNNNN.jsonl`): a resumed run
    beside them would give some lines twice."""
    found = FileSystems.match([f"{output}-*.jsonl"])[0].metadata_list
    return sorted(meta.path for meta in found if re.search(r"-\d{5}-of-\d{5}\.jsonl$", meta.path))


class WriteParts(beam.PTransform):
    """Writes `(SCORED or DEAD, record or entry)` elements into per-part files; the element's event time
    gives its part (its index in `parts`, see `sources.part_of`)."""

    def __init__(self, parts: Sequence[InputPart], output: str, dead_letter: str):
        super().__init__()
        self._parts = tuple(parts)
        self._prefixes = {SCORED: output, DEAD: dead_letter}

    def expand(self, tagged: beam.PCollection):
        return tagged | "WritePartFiles" >> beam.ParDo(_WritePartFiles(self._parts, self._prefixes))


class _WritePartFiles(beam.DoFn):
    def __init__(self, parts: tuple[InputPart, ...], prefixes: dict[str, str]):
        self._parts = parts
        self._prefixes = prefixes

    def setup(self) -> None:
        self._done = Metrics.counter(records.METRICS_NAMESPACE, PARTS_DONE)

    def start_bundle(self) -> None:
        self._open: dict[tuple[int, str], tuple[str, object]] = {}

    def process(self, element: tuple[str, dict], timestamp=beam.DoFn.TimestampParam) -> None:
        kind, value = element
        key = (part_of(timestamp), kind)
        if key not in self._open:
            self._open[key] = self._create(*key)
        self._open[key][1].write(records.to_json(value).encode("utf-8") + b"\n")

    def finish_bundle(self) -> None:
        for index in sorted({index for index, _ in self._open}):
            if (index, SCORED) not in self._open:  # every line dead-lettered: the empty file still says "done"
                self._open[(index, SCORED)] = self._create(index, SCORED)
            for kind in (DEAD, SCORED):  # the scored file last: its presence means the part is done
                if (index, kind) in self._open:
                    temporary, stream = self._open.pop((index, kind))
                    stream.close()
                    FileSystems.rename([temporary], [self._final(index, kind)])
            self._done.inc()
        self._open = {}

    def _final(self, index: int, kind: str) -> str:
        return part_file(self._prefixes[kind], self._parts[index])

    def _create(self, index: int, kind: str) -> tuple[str, object]:
        folder, name = FileSystems.split(self._final(index, kind))
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
