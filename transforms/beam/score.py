"""`ScoreLongCLIP`: the reusable Beam transform that scores image/long-caption records."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.utils.windowed_value import WindowedValue

from transforms.beam.handler import LongCLIPModelHandler
from transforms.beam.prefetch import OrderedPrefetcher
from transforms.inputs import images
from transforms.inputs import reasons as input_errors
from transforms.inputs.prepare import PairPreparer, PreparedPair
from transforms.inputs.reasons import InputError
from transforms.model.architecture import read_architecture
from transforms.model.locate import DEFAULT_MODEL, resolve_checkpoint

METRICS_NAMESPACE = "ScoreLongCLIP"
_FAILED = "failed"


class ScoreLongCLIP(beam.PTransform):
    """Scores each record's image against its (long) caption with LongCLIP.

    Input: a PCollection of dicts. Output: every input dict exactly once, its fields untouched, plus
    `output_key` (float in [0, 1]: clamp((cos + 1) / 2, 0, 1)), `<output_key>_error` (None, or
    `"<reason_code>: <message>"` with score 0.0) and `<output_key>_truncated` (the caption was
    longer than the model's context and was cut).

    Bad images or texts never fail the pipeline; they come out with score 0.0 and a reason.

    `prepare_threads` threads fetch and decode images while the model scores earlier batches.
    `precision` `"bf16"`/`"fp16"` speeds up GPUs at a small score deviation (README, Performance).
    `stored_weights` keeps a LongCLIP checkpoint's weights as stored rather than rounded to fp16 as
    LongCLIP's loader does; the default gives the original evaluator's scores.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: Optional[str] = None,
        image_key: str = "image_path",
        text_key: str = "text",
        output_key: str = "longclip_score",
        image_root: Optional[str] = None,
        min_batch_size: int = 1,
        max_batch_size: int = 32,
        max_batch_duration_secs: Optional[float] = None,
        share_model_across_processes: bool = False,
        model_copies: Optional[int] = None,
        max_image_bytes: int = images.DEFAULT_MAX_IMAGE_BYTES,
        max_image_pixels: int = images.DEFAULT_MAX_IMAGE_PIXELS,
        http_timeout_secs: float = images.DEFAULT_HTTP_TIMEOUT_SECS,
        precision: str = "fp32",
        prepare_threads: int = 4,
        stored_weights: bool = False,
    ):
        super().__init__()
        if prepare_threads < 1:
            raise ValueError(f"prepare_threads must be at least 1, got {prepare_threads}")
        self._model = model
        self._output_key = output_key
        self._handler = LongCLIPModelHandler(
            model,
            device=device,
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            share_model_across_processes=share_model_across_processes,
            model_copies=model_copies,
            precision=precision,
            stored_weights=stored_weights,
        )
        # Enough in flight that the next batch is being decoded while the current one is scored.
        self._prefetch = dict(threads=prepare_threads, max_pending=max_batch_size + prepare_threads)
        self._preparer_kwargs = dict(
            image_key=image_key,
            text_key=text_key,
            image_root=image_root,
            max_image_bytes=max_image_bytes,
            max_image_pixels=max_image_pixels,
            http_timeout_secs=http_timeout_secs,
        )

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        prepare = _PrepareDoFn(self._model, self._preparer_kwargs, self._prefetch)
        prepared = records | "Prepare" >> beam.ParDo(prepare).with_outputs(_FAILED, main="ready")
        scored = (
            prepared.ready
            | "RunInference" >> RunInference(self._handler)
            | "AttachScore" >> beam.Map(_attach_score, self._output_key)
        )
        failed = prepared[_FAILED] | "AttachError" >> beam.Map(_attach_error, self._output_key)
        return (scored, failed) | "Merge" >> beam.Flatten()


class _Failure(NamedTuple):
    record: dict
    code: str
    error: str
    truncated: bool


class _PrepareDoFn(beam.DoFn):
    """Validates, tokenizes and fetches/decodes/preprocesses; failures go to the `failed` output.

    The work runs on a bounded thread pool, so images are read and decoded while the fused
    downstream RunInference scores earlier records. Each result is emitted with its own record's
    window, timestamp and pane, in input order; whatever is in flight at the bundle's end is
    emitted by `finish_bundle`, so every record comes out exactly once.
    """

    def __init__(self, model: str, preparer_kwargs: dict[str, Any], prefetch: dict[str, int]):
        self._model = model
        self._preparer_kwargs = preparer_kwargs
        self._prefetch_kwargs = prefetch
        self._preparer: Optional[PairPreparer] = None
        self._prefetcher: Optional[OrderedPrefetcher] = None

    def setup(self) -> None:
        architecture = read_architecture(resolve_checkpoint(self._model))
        self._preparer = PairPreparer(
            image_resolution=architecture.image_resolution,
            context_length=architecture.context_length,
            **self._preparer_kwargs,
        )
        self._prefetcher = OrderedPrefetcher(self._prepare, **self._prefetch_kwargs)

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

    def _prepare(self, record: dict) -> Union[PreparedPair, _Failure]:
        truncated = False
        try:
            text = self._preparer.tokenize_text(record)
            truncated = text.truncated
            image = self._preparer.load_keyed_image(record)
        except InputError as error:
            return _Failure(record, error.code, str(error), truncated)
        return PreparedPair(image.pixels, text.ids, (record, truncated), image.key)


def _emit(result: Union[PreparedPair, _Failure], timestamp, window, pane):
    if isinstance(result, PreparedPair):  # the event time rides along, for `_attach_score`
        result = result._replace(context=(*result.context, timestamp))
    value = WindowedValue(result, timestamp, (window,), pane)
    return beam.pvalue.TaggedOutput(_FAILED, value) if isinstance(result, _Failure) else value


def _attach_score(result: PredictionResult, output_key: str) -> beam.window.TimestampedValue:
    """Also gives the record back its own event time: Beam's batching emits every batch at the end of
    the window, which would put scored records of a stream into a window that never closes."""
    record, truncated, timestamp = result.example.context
    score = float(result.inference)
    if math.isfinite(score):
        Metrics.counter(METRICS_NAMESPACE, "scored").inc()
        out = _with_fields(record, output_key, score, None, truncated)
    else:
        message = f"{input_errors.SCORE_NOT_FINITE}: the model gave {score} (with fp16, try bf16 or fp32)"
        out = _attach_error(_Failure(record, input_errors.SCORE_NOT_FINITE, message, truncated), output_key)
    return beam.window.TimestampedValue(out, timestamp)


def _attach_error(failure: _Failure, output_key: str) -> dict:
    Metrics.counter(METRICS_NAMESPACE, "failed").inc()
    Metrics.counter(METRICS_NAMESPACE, f"failed_{failure.code}").inc()
    return _with_fields(failure.record, output_key, 0.0, failure.error, failure.truncated)


def _with_fields(record: dict, output_key: str, score: float, error: Optional[str], truncated: bool) -> dict:
    if truncated:
        Metrics.counter(METRICS_NAMESPACE, "truncated").inc()
    out = dict(record)
    out[output_key] = score
    out[f"{output_key}_error"] = error
    out[f"{output_key}_truncated"] = truncated
    return out
