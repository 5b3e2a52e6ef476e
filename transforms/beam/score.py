"""`ScoreLongCLIP`: the reusable Beam transform that scores image/long-caption records."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import reasons
from transforms.beam.handler import CaptionScores, LongCLIPModelHandler, ScoreWithEmbeddings
from transforms.inputs.prefetch import OrderedPrefetcher
from transforms.inputs.prepare import PairPreparer, PreparedPair
from transforms.model.faults import InferenceFailure
from transforms.model.header import InputSizes
from transforms.outputs import OutputFields, Span
from transforms.reasons import InputError
from transforms.settings import DEFAULT_MODEL, BatchSettings, ImageSettings, ModelSettings, RecordFields

_FAILED = "failed"


class ScoredAndFailed(NamedTuple):
    """What `ScoreLongCLIP(...).with_exception_handling()` returns: records scored, and records that could
    not be (score 0.0, with their reason and message), as two PCollections."""

    scored: beam.PCollection
    failed: beam.PCollection


class ScoreLongCLIP(beam.PTransform):
    """Scores each record's image against its (long) caption with LongCLIP.

    Input: a PCollection of dicts. Output: every input dict exactly once, its fields untouched, plus the
    fields of `OutputFields.of(fields)`: the score (float in [0, 1], clamp((cos + 1) / 2, 0, 1)),
    the reason code and `"<reason>: <message>"` error (None when scored; score 0.0 when not), whether
    the caption was truncated, and with `fields.embeddings` the image and text embeddings (None when
    not scored). Bad images or texts never fail the pipeline.

    The image field may hold a location, the image's bytes, or a Hugging Face image struct `{bytes,
    path}`; inline bytes are never copied to the output: bytes become None, a struct its path.

    Args:
      model: a checkpoint (Hub id, file, folder, `gs://` URI), `ModelSettings`, or a ready
        `LongCLIPModelHandler` (which then also carries the batching).
      batching: `BatchSettings`, unless `model` is a handler.
      fields: which record fields hold the image and caption, the output field names, and whether
        the embeddings are added.
      images: image root, size limits, HTTP timeout and decoding threads.
      metrics_namespace: namespace of this step's counters (scored, failed, failed_<reason>, truncated);
        its RunInference metrics go to `<namespace>.inference`. Default: the step's label, so two steps
        never share counters.
      model_metadata_pcoll: Beam's model-refresh side input, passed to RunInference.

    `.with_exception_handling()` makes the transform return `ScoredAndFailed` instead of one PCollection.
    """

    def __init__(
        self,
        model: Union[str, ModelSettings, LongCLIPModelHandler] = DEFAULT_MODEL,
        *,
        batching: Optional[BatchSettings] = None,
        fields: RecordFields = RecordFields(),
        images: ImageSettings = ImageSettings(),
        metrics_namespace: Optional[str] = None,
        model_metadata_pcoll: Optional[beam.PCollection] = None,
    ):
        super().__init__()
        if isinstance(model, LongCLIPModelHandler):
            if batching is not None:
                raise ValueError(
                    "pass batching to the LongCLIPModelHandler, not to ScoreLongCLIP, when giving a handler"
                )
            self.handler = model
        else:
            self.handler = LongCLIPModelHandler(model, batching or BatchSettings())
        self.fields = fields
        self.images = images
        self._metrics_namespace = metrics_namespace
        self._model_metadata_pcoll = model_metadata_pcoll
        self._split_failures = False

    def with_exception_handling(self) -> "ScoreLongCLIP":
        """Returns (scored, failed) PCollections instead of one; failed records still carry score 0.0,
        their reason and message, like `RunInference(...).with_exception_handling()` splits off failures."""
        self._split_failures = True
        return self

    @property
    def metrics_namespace(self) -> str:
        return self._metrics_namespace or self.label

    def expand(self, records: beam.PCollection) -> Union[beam.PCollection, ScoredAndFailed]:
        namespace = self.metrics_namespace
        outputs = OutputFields.of(self.fields)
        batching = self.handler.batching
        # Read here, once, so that workers open the checkpoint only to load the model.
        sizes = self.handler.input_sizes()
        prepare = _PrepareDoFn(sizes, self.fields, self.images, batching.max_batch_size)
        prepared = records | "Prepare" >> beam.ParDo(prepare).with_outputs(_FAILED, main="ready")
        results = prepared.ready | "RunInference" >> RunInference(
            self.handler,
            metrics_namespace=f"{namespace}.inference",
            model_metadata_pcoll=self._model_metadata_pcoll,
            inference_args={"embeddings": True} if outputs.embeddings else None,
        )
        scored = results | "AttachScore" >> beam.ParDo(_AttachScore(outputs, namespace)).with_outputs(
            _FAILED, main="scored"
        )
        failed = (prepared[_FAILED], scored[_FAILED]) | "Failures" >> beam.Flatten()
        failed = failed | "AttachReason" >> beam.Map(_attach_failure, outputs, namespace)
        if self._split_failures:
            return ScoredAndFailed(scored.scored, failed)
        return (scored.scored, failed) | "Merge" >> beam.Flatten()


class RecordContext(NamedTuple):
    """What travels with a prepared pair through inference, to be put back on the record: with chunks or
    sentence scores, the spans of the caption that the pair's extra texts are."""

    record: dict
    truncated: bool
    timestamp: Optional[Timestamp]  # set when the prepared pair is emitted
    chunks: Optional[tuple[tuple[int, int], ...]] = None
    sentences: Optional[tuple[tuple[int, int], ...]] = None


class _Failure(NamedTuple):
    record: dict
    reason: str
    error: str
    truncated: bool


class _PrepareDoFn(beam.DoFn):
    """Validates, tokenizes and fetches/decodes/preprocesses; failures go to the `failed` output.

    The work runs on a bounded thread pool, so images are read and decoded while the fused
    downstream RunInference scores earlier records. Each result is emitted with its own record's
    window, timestamp and pane, in input order; whatever is in flight at the bundle's end is
    emitted by `finish_bundle`, so every record comes out exactly once.
    """

    def __init__(self, sizes: InputSizes, fields: RecordFields, images: ImageSettings, max_batch_size: int):
        self._sizes = sizes
        self._fields = fields
        self._images = images
        # Enough in flight that the next batch is being decoded while the current one is scored.
        self._max_pending = max_batch_size + images.prepare_threads
        self._preparer: Optional[PairPreparer] = None
        self._prefetcher: Optional[OrderedPrefetcher] = None

    def setup(self) -> None:
        self._preparer = PairPreparer(
            image_resolution=self._sizes.image_resolution,
            context_length=self._sizes.context_length,
            fields=self._fields,
            images=self._images,
        )
        # A thread for every record in flight, so that a stalled read never keeps another from starting
        # (each read ends by its deadline); the preparer decodes on prepare_threads threads of its own.
        self._prefetcher = OrderedPrefetcher(self._prepare, threads=self._max_pending, max_pending=self._max_pending)

    def start_bundle(self) -> None:
        self._prefetcher.discard()  # leftovers of a failed bundle, which the runner retries

    def process(
        self,
        record: dict,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ):
        for (ts, win, pn), result in self._prefetcher.submit(record, (timestamp, window, pane)):
            yield _emit(result, ts, win, pn)

    def finish_bundle(self):
        for (ts, win, pn), result in self._prefetcher.drain():
            yield _emit(result, ts, win, pn)

    def teardown(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
        if self._preparer is not None:
            self._preparer.close()

    def _prepare(self, record: dict) -> Union[PreparedPair, _Failure]:
        truncated = False
        kept = self._preparer.without_image_bytes(record)
        try:
            caption = self._preparer.caption_parts(record)
            truncated = caption.text.truncated
            image = self._preparer.load_image(record)
        except InputError as error:
            return _Failure(kept, error.reason, str(error), truncated)
        context = RecordContext(kept, truncated, None, caption.chunks, caption.sentences)
        return PreparedPair(
            image.pixels, caption.text.ids, context, image.digest, caption.chunk_ids, caption.sentence_ids
        )


def _emit(result: Union[PreparedPair, _Failure], timestamp, window, pane):
    if isinstance(result, PreparedPair):  # the event time rides along, for `_AttachScore`
        result = result._replace(context=result.context._replace(timestamp=timestamp))
    value = WindowedValue(result, timestamp, (window,), pane)
    return beam.pvalue.TaggedOutput(_FAILED, value) if isinstance(result, _Failure) else value


class _AttachScore(beam.DoFn):
    """Puts the score on the record and gives the record back its own event time: Beam's batching emits
    every batch at the end of the window, which would put scored records of a stream into a window that
    never closes. A score that is not finite, or a record the model failed on, is a failure."""

    def __init__(self, outputs: OutputFields, namespace: str):
        self._outputs = outputs
        self._namespace = namespace

    def setup(self) -> None:
        self._scored = Metrics.counter(self._namespace, "scored")
        self._truncated = Metrics.counter(self._namespace, "truncated")

    def process(self, result: PredictionResult):
        context: RecordContext = result.example.context
        if isinstance(result.inference, InferenceFailure):
            message = f"{reasons.INFERENCE_FAILED}: the model failed on this record alone: {result.inference.message}"
            failure = _Failure(context.record, reasons.INFERENCE_FAILED, message, context.truncated)
            yield beam.pvalue.TaggedOutput(_FAILED, beam.window.TimestampedValue(failure, context.timestamp))
            return
        inference = _as_caption_scores(result.inference)
        score = float(inference.score)
        if not math.isfinite(score):
            message = f"{reasons.SCORE_NOT_FINITE}: the model gave {score} (with fp16, try bf16 or fp32)"
            failure = _Failure(context.record, reasons.SCORE_NOT_FINITE, message, context.truncated)
            yield beam.pvalue.TaggedOutput(_FAILED, beam.window.TimestampedValue(failure, context.timestamp))
            return
        self._scored.inc()
        if context.truncated:
            self._truncated.inc()
        parts = _parts(inference, context)
        out = {**context.record, **self._outputs.values(score, None, None, context.truncated, **parts)}
        yield beam.window.TimestampedValue(out, context.timestamp)


def _as_caption_scores(inference: Union[float, ScoreWithEmbeddings, CaptionScores]) -> CaptionScores:
    """Every kind of inference the handler gives, as one (a batch holds parts only when a caption of it has)."""
    if isinstance(inference, CaptionScores):
        return inference
    if isinstance(inference, ScoreWithEmbeddings):
        return CaptionScores(inference.score, [], [], inference.image_embedding, inference.text_embedding)
    return CaptionScores(inference, [], [])


def _parts(inference: CaptionScores, context: RecordContext) -> dict[str, Any]:
    """The embeddings, and the chunk and sentence `Span`s of the caption (a caption that fits is its own chunk)."""
    chunk_scores = inference.chunk_scores or [float(inference.score)]
    parts: dict[str, Any] = {"image_embedding": inference.image_embedding, "text_embedding": inference.text_embedding}
    if context.chunks is not None:
        parts["chunks"] = [Span(*span, score) for span, score in zip(context.chunks, chunk_scores, strict=True)]
    if context.sentences is not None:
        sentences = zip(context.sentences, inference.sentence_scores, strict=True)
        parts["sentences"] = [Span(*span, score) for span, score in sentences]
    return parts


def _attach_failure(failure: _Failure, outputs: OutputFields, namespace: str) -> dict[str, Any]:
    Metrics.counter(namespace, "failed").inc()
    Metrics.counter(namespace, f"failed_{failure.reason}").inc()
    if failure.truncated:
        Metrics.counter(namespace, "truncated").inc()
    return {**failure.record, **outputs.values(0.0, failure.reason, failure.error, failure.truncated)}
