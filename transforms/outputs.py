"""The fields `ScoreLongCLIP` adds to every record, named after `output_key`.

The one place these names are made: the transform writes them, and sinks such as the job's
BigQuery rows read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

from transforms.settings import RecordFields


class Span(NamedTuple):
    """A part of a caption and its score: `caption[start:end]` (Python string offsets into the caption as
    given) scored alone against the image, exactly as a whole caption is."""

    start: int
    end: int
    score: float


@dataclass(frozen=True)
class OutputFields:
    """`score`: float in [0, 1], 0.0 on failure; `reason`: None, or a reason code (`transforms.REASON_CODES`);
    `error`: None, or `"<reason>: <message>"`; `truncated`: the caption was cut to the model's context.
    With `embeddings`, also `image_embedding` and `text_embedding`: the L2-normalised float32 features (lists
    of the model's embedding size) whose clamp((dot + 1) / 2, 0, 1) is the score; None when the record failed.
    With `long_captions="chunks"`, the score is the mean of the caption's chunk scores, `score_min` the lowest
    and `chunks` their `Span`s as `{start, end, score}` in caption order (a caption that fits is one chunk);
    `truncated` is False (nothing is cut), and `text_embedding` is the L2-normalised mean of the chunks'. With
    `sentence_scores`, `sentences`: each sentence's `{start, end, score}`. None for all three when the record
    failed."""

    output_key: str = "longclip_score"
    embeddings: bool = False
    long_captions: str = "truncate"
    sentence_scores: bool = False

    @classmethod
    def of(cls, fields: RecordFields) -> OutputFields:
        """The fields `ScoreLongCLIP(fields=fields)` adds."""
        return cls(fields.output_key, fields.embeddings, fields.long_captions, fields.sentence_scores)

    @property
    def chunked(self) -> bool:
        return self.long_captions == "chunks"

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
    def score_min(self) -> str:
        return f"{self.output_key}_min"

    @property
    def chunks(self) -> str:
        return f"{self.output_key}_chunks"

    @property
    def sentences(self) -> str:
        return f"{self.output_key}_sentences"

    @property
    def names(self) -> tuple[str, ...]:
        """Every field added to a record, in the order `values` adds them."""
        names = (self.score, self.error, self.reason, self.truncated)
        names += (self.image_embedding, self.text_embedding) if self.embeddings else ()
        names += (self.score_min, self.chunks) if self.chunked else ()
        return names + ((self.sentences,) if self.sentence_scores else ())

    def values(
        self,
        score: float,
        reason: str | None,
        error: str | None,
        truncated: bool,
        image_embedding: list[float] | None = None,
        text_embedding: list[float] | None = None,
        chunks: Sequence[Span] | None = None,
        sentences: Sequence[Span] | None = None,
    ) -> dict:
        """The added fields of one record (each optional group only when its setting is on)."""
        added = {self.score: score, self.error: error, self.reason: reason, self.truncated: truncated}
        if self.embeddings:
            added[self.image_embedding] = image_embedding
            added[self.text_embedding] = text_embedding
        if self.chunked:
            added[self.score_min] = min(span.score for span in chunks) if chunks else None
            added[self.chunks] = _spans(chunks)
        if self.sentence_scores:
            added[self.sentences] = _spans(sentences)
        return added


def _spans(spans: Sequence[Span] | None) -> list[dict] | None:
    return None if spans is None else [span._asdict() for span in spans]
