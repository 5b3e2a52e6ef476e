"""`--resume`: a batch job's outputs written part by part, so that a stopped job can go on where it stopped.

The job runs one local pipeline per input part (`parts.InputPart`). Its bundles, however many workers run
them, each write their own files into the part's staging folder (`WritePart`); once the pipeline has ended,
the launcher joins them into the part's files, `<output>-part-<id>.jsonl` and `<dead_letter>-part-<id>.jsonl`,
checks that they hold every line the part read, and writes the part's manifest last (`manifests.commit`).
A part is done only when its manifest is there and its files are as the manifest says; a part whose pipeline
fails, or whose job is killed, is read again and written whole. A rerun that differs from the run that began
the output (other input files or sizes, part size, scoring settings) is refused before it starts, so every
line is in the outputs exactly once however often the job is stopped.
"""

from __future__ import annotations

import logging
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline.io import manifests, records

_LOGGER = logging.getLogger(__name__)

SCORED, DEAD = manifests.SCORED, manifests.DEAD
PARTS_DONE = "parts_done"  # counter: parts this run committed


class WritePart(beam.PTransform):
    """Writes the `(SCORED or DEAD, record or entry)` elements of one part's pipeline into `staging`: one file
    per bundle and kind, joined by `manifests.commit` once the pipeline has ended."""

    def __init__(self, staging: str):
        super().__init__()
        self._staging = staging

    def expand(self, tagged: beam.PCollection):
        return tagged | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(self._staging))


class _WriteBundleFiles(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def start_bundle(self) -> None:
        self._open: dict[str, object] = {}

    def process(self, element: tuple[str, dict]) -> None:
        kind, value = element
        if kind not in self._open:
            path = FileSystems.join(self._staging, f"{kind}-{uuid.uuid4().hex}.jsonl")
            self._open[kind] = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._open[kind].write(records.to_json(value).encode("utf-8") + b"\n")

    def finish_bundle(self) -> None:
        for stream in self._open.values():
            stream.close()
        self._open = {}


def lines_read(result: PipelineResult) -> Optional[int]:
    """The lines a part's pipeline read (its `read` counter), or None when the runner did not report it."""
    query = MetricsFilter().with_namespace(records.METRICS_NAMESPACE).with_name("read")
    found = result.metrics().query(query)["counters"]
    return sum(counter.committed or 0 for counter in found) if found else None


class PartByPartResult(PipelineResult):
    """The pipelines of a resumed run, one per part, as one finished result: their metrics add up, and
    `parts_done` counts the parts committed."""

    def __init__(self, results: Sequence[PipelineResult]):
        super().__init__(PipelineState.DONE)
        self._results = tuple(results)

    def wait_until_finish(self, duration=None):
        return self.state

    def cancel(self):
        return self.state

    def metrics(self) -> MetricResults:
        return _AllMetrics([result.metrics() for result in self._results], {PARTS_DONE: len(self._results)})


class _AllMetrics(MetricResults):
    def __init__(self, each: list[MetricResults], counters: dict[str, int]):
        self._each = each
        self._counters = counters

    def query(self, filter=None) -> dict[str, list]:
        merged: dict[str, list] = {self.COUNTERS: [], self.DISTRIBUTIONS: [], self.GAUGES: []}
        for metrics in self._each:
            for kind, found in metrics.query(filter).items():
                merged.setdefault(kind, []).extend(found)
        for name, value in self._counters.items():
            key = MetricKey("Resume", MetricName(records.METRICS_NAMESPACE, name))
            if value and self.matches(filter, key):
                merged[self.COUNTERS].append(MetricResult(key, value, value))
        return merged
