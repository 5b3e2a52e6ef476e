"""Keeping the rows worth keeping: an absolute score threshold and/or the top fraction of scored rows.

Every scored record goes to exactly one of the two outputs. Rows that were scored at or above the
cutoff are kept as they are; the rest, and every row that could not be scored, are rejected with the
cutoff that was used (`<output_key>_cutoff`), so a rejected file says why each row is in it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton

from pipeline.filters.cutoff import TopFractionCutoff
from pipeline.io.records import METRICS_NAMESPACE
from transforms import OutputFields

REJECTED = "rejected"


class KeptAndRejected(NamedTuple):
    kept: beam.PCollection
    rejected: beam.PCollection


class KeepByScore(beam.PTransform):
    """Splits scored records into kept and rejected.

    Args:
      outputs: the score fields' names.
      min_score: keep rows scored at least this.
      top_fraction: keep the ceil(top_fraction × scored rows) highest-scoring rows, by an exact global
        cutoff (rows tied with the cutoff are all kept). Bounded input only: it needs every score first.
    With both, a row is kept when it passes both (its cutoff is the higher of the two).
    """

    def __init__(
        self, outputs: OutputFields, *, min_score: Optional[float] = None, top_fraction: Optional[float] = None
    ):
        super().__init__()
        if min_score is None and top_fraction is None:
            raise ValueError("pass min_score, top_fraction or both")
        self._outputs = outputs
        self._min_score = min_score
        self._top_fraction = top_fraction

    def expand(self, records: beam.PCollection) -> KeptAndRejected:
        split = _Split(self._outputs)
        if self._top_fraction is None:
            results = records | "Split" >> beam.ParDo(split, self._min_score).with_outputs(REJECTED, main="kept")
        else:
            if not records.is_bounded:
                raise ValueError("a top-fraction cutoff needs a bounded input (a batch job)")
            cutoff = (
                records
                | "ScoresOfScoredRows" >> beam.FlatMap(_score_if_scored, self._outputs)
                | "TopFractionCutoff" >> TopFractionCutoff(self._top_fraction)
                | "AndMinScore" >> beam.Map(_higher, self._min_score)
            )
            split = beam.ParDo(split, AsSingleton(cutoff))
            results = records | "Split" >> split.with_outputs(REJECTED, main="kept")
        return KeptAndRejected(results.kept, results[REJECTED])


def _score_if_scored(record: dict, outputs: OutputFields) -> list[float]:
    return [record[outputs.score]] if record.get(outputs.reason) is None else []


def _higher(cutoff: Optional[float], min_score: Optional[float]) -> Optional[float]:
    if cutoff is None:  # nothing was scored: every row is rejected anyway
        return min_score
    return cutoff if min_score is None else max(cutoff, min_score)


class _Split(beam.DoFn):
    def __init__(self, outputs: OutputFields):
        self._outputs = outputs

    def setup(self) -> None:
        self._kept = Metrics.counter(METRICS_NAMESPACE, "kept")
        self._rejected = Metrics.counter(METRICS_NAMESPACE, "rejected")

    def process(self, record: dict, cutoff: Optional[float]):
        scored = record.get(self._outputs.reason) is None
        if scored and (cutoff is None or record[self._outputs.score] >= cutoff):
            self._kept.inc()
            yield record
        else:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED, {**record, self._outputs.cutoff: cutoff})
