"""The fields `ScoreLongCLIP` adds to every record, named after `output_key`.

The one place these names are made: the transform writes them, and sinks such as the job's
BigQuery rows read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms.settings import RecordFields


@dataclass(frozen=True)
class OutputFields:
    """`score`: float in [0, 1], 0.0 on failure; `reason`: None, or a reason code (`transforms.REASON_CODES`);
    `error`: None, or `"<reason>: <message>"`; `truncated`: the caption was cut to the model's context.
    With `embeddings`, also `image_embedding` and `text_embedding`: the L2-normalised float32 features (lists
    of the model's embedding size) whose clamp((dot + 1) / 2, 0, 1) is the score; None when the record failed."""

    output_key: str = "longclip_score"
    embeddings: bool = False

    @classmethod
    def of(cls, fields: RecordFields) -> OutputFields:
        """The fields `ScoreLongCLIP(fields=fields)` adds."""
        return cls(fields.output_key, fields.embeddings)

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

    @property
    def image_embedding(self) -> str:
        return f"{self.output_key}_image_embedding"

    @property
    def text_embedding(self) -> str:
        return f"{self.output_key}_text_embedding"

    @property
    def names(self) -> tuple[str, ...]:
        """Every field added to a record, in the order `values` adds them."""
        names = (self.score, self.error, self.reason, self.truncated)
        return names + ((self.image_embedding, self.text_embedding) if self.embeddings else ())

    def values(
        self,
        score: float,
        reason: str | None,
        error: str | None,
        truncated: bool,
        image_embedding: list[float] | None = None,
        text_embedding: list[float] | None = None,
    ) -> dict:
        """The added fields of one record (the embeddings only when `embeddings` is set)."""
        added = {self.score: score, self.error: error, self.reason: reason, self.truncated: truncated}
        if self.embeddings:
            added[self.image_embedding] = image_embedding
            added[self.text_embedding] = text_embedding
        return added
