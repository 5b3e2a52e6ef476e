"""Beam 2.77's local streaming runner (`BundleBasedDirectRunner`), made to stop cleanly and to count right.

- `StoppableRead` reads Pub/Sub as that runner's own reader does (pulls of up to 10 messages, each pull
  acknowledged at once), but stops pulling when asked (`LocalStreamingResult.drain`): its watermark then
  jumps to the end of time, every window closes, what was pulled is scored and written, and the job ends.
  A pull waits at most `PULL_SECONDS` (Beam's waits 30 s), so a stop and an idle window's files come sooner.
- `install()` also makes each bundle count into its own metrics container: the runner's worker threads keep
  one state sampler each, whose cached step states hold the container of the first bundle they ran, so later
  bundles counted into a container already committed (the job reported 10 records read after 50).

Both lean on the runner's internals (`_PubSubReadEvaluator`, `TransformEvaluatorRegistry`, `TransformExecutor`),
pinned with Beam in requirements.txt; tests/pipeline/test_local_streaming.py fails if they change under us.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from typing import Optional

from apache_beam.pvalue import PBegin, PCollection
from apache_beam.runners.direct import executor
from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
from apache_beam.runners.direct.transform_evaluator import (
    TransformEvaluatorRegistry,
    _PubSubReadEvaluator,
)
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.runners.runner import PipelineResult
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.ptransform import PTransform
from apache_beam.utils import counters

_LOGGER = logging.getLogger(__name__)

PULL_SECONDS = 5.0  # the longest one pull waits for messages; Beam's own reader waits 30 s
# The longest a stop waits for what was pulled to be written (an emulator or a table gone away would hold it
# for the clients' retries, minutes): then the job is cancelled, as by a second Ctrl-C.
DRAIN_SECONDS = 60.0
MAX_MESSAGES = 10  # per pull, as Beam's own reader

_STOPPED: set[str] = set()  # tokens of the reads asked to stop
_LOCK = threading.Lock()


class StoppableRead(_DirectReadFromPubSub):
    """Pub/Sub in, for the local streaming runner only: `ReadFromPubSub`'s source, read until `stop(token)`.

    Outputs what Beam's local runner gives for `ReadFromPubSub(..., with_attributes=True)`: `PubsubMessage`s
    timestamped with their publish time (`source` must not name a timestamp attribute: the job reads it itself).
    """

    def __init__(self, source):
        PTransform.__init__(self)  # Beam's _DirectReadFromPubSub skips it: it is only ever made by an override
        if source.timestamp_attribute or source.id_label:
            raise ValueError("StoppableRead reads neither a timestamp attribute nor an id label")
        self._source = source
        self.token = uuid.uuid4().hex

    def expand(self, begin: PBegin) -> PCollection:
        return PCollection(begin.pipeline, is_bounded=False)  # made by the runner: a primitive

    def to_runner_api_parameter(self, context):
        # Pickled, as ReadFromPubSub is: Beam's local runner rebuilds the pipeline from its protos before it runs.
        return self.to_runner_api_pickled(context)


def stop(token: str) -> None:
    """Asks the read with this token to stop pulling; it does at its next pull."""
    with _LOCK:
        _STOPPED.add(token)


def _stopped(token: str) -> bool:
    with _LOCK:
        return token in _STOPPED


class _StoppableReadEvaluator(_PubSubReadEvaluator):
    """Beam's local Pub/Sub read evaluator, with a short pull and an end."""

    def finish_bundle(self) -> TransformResult:
        transform = self._applied_ptransform.transform
        if _stopped(transform.token):
            _LOGGER.info("Stopped pulling from %s", self._sub_name)
            # Nothing left to read: no bundle to reschedule, and the watermark at the end of time.
            return TransformResult(self, [], [], None, {None: WatermarkManager.WATERMARK_POS_INF})
        return super().finish_bundle()

    def _read_from_pubsub(self, timestamp_attribute: Optional[str]) -> list:
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from apache_beam.utils.timestamp import Timestamp
        from google.api_core.exceptions import DeadlineExceeded

        client = self._get_subscriber_client(self._applied_ptransform)
        try:
            response = client.pull(subscription=self._sub_name, max_messages=MAX_MESSAGES, timeout=PULL_SECONDS)
        except DeadlineExceeded:
            return []  # nothing came: nothing was handed out, so nothing is acknowledged
        received = response.received_messages
        if received:
            # As Beam's reader does: acknowledged on pull, before the pipeline has the messages (see
            # docs/streaming.md#stopping-a-local-job: what a crash loses).
            client.acknowledge(subscription=self._sub_name, ack_ids=[message.ack_id for message in received])
        return [
            (Timestamp.from_utc_datetime(message.message.publish_time), PubsubMessage._from_message(message.message))
            for message in received
        ]


class LocalStreamingResult(PipelineResult):
    """A local streaming job's result that can also be drained: `drain()` stops its Pub/Sub reads, after which
    `wait_until_finish()` returns once everything pulled is written."""

    def __init__(self, result: PipelineResult, tokens: tuple[str, ...], drain_seconds: float = DRAIN_SECONDS):
        super().__init__(result.state)
        self._result = result
        self._tokens = tokens
        self._drain_seconds = drain_seconds
        self.draining = False

    def drain(self) -> None:
        self.draining = True
        for token in self._tokens:
            stop(token)

    def wait_or_drain_on_signal(self) -> None:
        """Waits for the job. The first Ctrl-C or SIGTERM drains it: no more pulls, what was pulled is scored and
        written, then this returns. A second raises `KeyboardInterrupt` (cancel then: what is in flight is lost)."""
        if threading.current_thread() is not threading.main_thread():
            self._result.wait_until_finish()  # signal handlers belong to the main thread
            return

        ended = threading.Event()  # set once the job is over: a late signal (the timer's) is then ignored
        lock = threading.Lock()  # the timer's signal is sent before the end is set, or not at all

        def on_signal(number: int, frame) -> None:
            if ended.is_set():
                return
            if self.draining:
                raise KeyboardInterrupt
            _LOGGER.info(
                "%s: stopping. No more messages are pulled; those pulled are scored and written, then the job ends "
                "(a second Ctrl-C or SIGTERM stops it at once, losing them; so does %.0f s without the end)",
                signal.Signals(number).name,
                self._drain_seconds,
            )
            self.drain()
            timer.start()

        def drain_too_long() -> None:
            with lock:
                if ended.is_set():
                    return
                _LOGGER.warning("The job did not end within %.0f s of the stop", self._drain_seconds)
                os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread, as a second Ctrl-C

        timer = threading.Timer(self._drain_seconds, drain_too_long)
        timer.daemon = True
        previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._result.wait_until_finish()
        finally:
            with lock:
                ended.set()
            timer.cancel()
            for number, handler in previous.items():
                signal.signal(number, handler)

    @property
    def state(self):
        return self._result.state

    def wait_until_finish(self, duration=None):
        return self._result.wait_until_finish(duration)

    def cancel(self):
        return self._result.cancel()

    def metrics(self):
        return self._result.metrics()


def tokens(pipeline) -> tuple[str, ...]:
    """The tokens of the `StoppableRead`s in `pipeline` (before it runs)."""
    from apache_beam.pipeline import PipelineVisitor

    found: list[str] = []

    class _Find(PipelineVisitor):
        def visit_transform(self, applied) -> None:
            if isinstance(applied.transform, StoppableRead):
                found.append(applied.transform.token)

    pipeline.visit(_Find())
    return tuple(found)


def prepare(pipeline) -> tuple[str, ...]:
    """The tokens of the `StoppableRead`s in `pipeline`, about to run; when there are any, `install()`."""
    found = tokens(pipeline)
    if found:
        install()
    return found


def install() -> None:
    """Registers `StoppableRead`'s evaluator and the per-bundle metrics fix with Beam's local runner (idempotent;
    neither changes anything for other runners)."""
    TransformEvaluatorRegistry._test_evaluators_overrides[StoppableRead] = _StoppableReadEvaluator
    call = executor.TransformExecutor.call
    if not getattr(call, "_fresh_sampler", False):
        executor.TransformExecutor.call = _with_fresh_sampler(call)


def _with_fresh_sampler(call):
    def call_with_fresh_sampler(self, state_sampler) -> None:
        # A sampler per bundle: its step states are made with this bundle's metrics container.
        sampler = statesampler.StateSampler("", counters.CounterFactory())
        statesampler.set_current_tracker(sampler)
        try:
            call(self, sampler)
        finally:
            statesampler.set_current_tracker(state_sampler)

    call_with_fresh_sampler._fresh_sampler = True
    return call_with_fresh_sampler
