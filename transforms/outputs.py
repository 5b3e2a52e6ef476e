"""The fields `ScoreLongCLIP` adds to every record, named after `output_key`.

The one place these names are made: the transform writes them, and sinks such as the job's
BigQuery rows read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFields:
    """`score`: float in [0, 1], 0.0 on failure; `reason`: None, or a reason code (`transforms.REASON_CODES`);
    `error`: None, or `"<reason>: <message>"`; `truncated`: the caption was cut to the model's context."""

    output_key: str = "longclip_score"

    @property
    def score(self) -> str:
        return self.output_key

    @property
    def error(self) -> str:
        return f"{self.output_key}_error"

    @property
    def reason(self) -> str:
        return f"{self.output_key}_reason"

    @property
    def truncated(self) -> str:
        return f"{self.output_key}_truncated"

    @property
    def cutoff(self) -> str:
        """Not added by the transform: the job's filters put the cutoff score on the rows they reject."""
        return f"{self.output_key}_cutoff"

    def values(self, score: float, reason: str | None, error: str | None, truncated: bool) -> dict:
        """The added fields of one record."""
        return {self.score: score, self.error: error, self.reason: reason, self.truncated: truncated}
