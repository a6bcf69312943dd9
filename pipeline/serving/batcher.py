"""One inference thread for the API (``Batcher``): it gathers the texts of concurrent requests into one
length-sorted batch (up to ``serve.max_batch_texts``), so the two cores stay busy with large matrix products
instead of many threads fighting over them. Explanations do not run here: they have their own threads and
budget (``explainer``), so a prediction never waits behind one.

The queue is bounded (``serve.max_queue`` waiting texts; beyond it a request is refused with ``QueueFull``, a 503)
so an overload shows as fast refusals, not as latency growing without end. A batch that fails is retried one
request at a time, so one text the model cannot take fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from pipeline.serving.metrics import ServeMetrics
from pipeline.serving.store import LoadedModel

log = logging.getLogger(__name__)


class QueueFull(PipelineError):
    """Too many texts are waiting for the inference thread (503 + Retry-After)."""


@dataclass
class _Job:
    model: LoadedModel
    texts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """One inference thread: drains the queue and runs the texts of all waiting requests together."""

    def __init__(self, max_batch_texts: int, metrics: ServeMetrics | None = None, max_queue: int | None = None) -> None:
        self.max_batch_texts = max_batch_texts
        self.max_queue = max_queue  # waiting texts a request may join; None = unbounded (threads like the shadow's)
        self.metrics = metrics
        self.waiting_texts = 0  # queued, not yet taken by the inference thread
        self.running = False  # a batch is being computed
        self.in_flight = 0  # requests awaiting predict(), until they have resumed (changed on the event loop only)
        self._idle = threading.Event()  # none of the three: explanations may go on
        self._idle.set()
        self._waiting_lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emotion-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def alive(self) -> bool:
        """Whether the inference thread is running (a health check: without it no request is ever answered)."""
        return self._thread.is_alive()

    def pending(self) -> int:
        """Requests waiting for the inference thread (approximate, for /metrics)."""
        return self._queue.qsize()

    def submit(self, model: LoadedModel, texts: list[str], bounded: bool = False) -> Future:
        """Queue texts for ``model``; the future's result is their predictions (for threads, e.g. the shadow).

        ``bounded``: raise QueueFull instead when more than ``max_queue`` texts would be waiting (an empty queue
        takes any request, so a full-size request is never refused on an idle server)."""
        job = _Job(model, texts)
        with self._waiting_lock:
            waiting = self.waiting_texts
            if bounded and self.max_queue is not None and waiting and waiting + len(texts) > self.max_queue:
                raise QueueFull(f"the server is busy: {waiting} texts are waiting for inference; retry shortly")
            self.waiting_texts = waiting + len(texts)
        self._settle()
        self._queue.put(job)
        return job.future

    async def predict(self, model: LoadedModel, texts: list[str]) -> Any:
        """The predictions of a request; QueueFull when the queue is full (cancelling skips the texts if they
        have not started)."""
        self.in_flight += 1
        try:
            return await asyncio.wrap_future(self.submit(model, texts, bounded=True))
        finally:
            self.in_flight -= 1
            self._settle()

    def _taken(self, job: _Job) -> _Job:
        with self._waiting_lock:
            self.waiting_texts -= len(job.texts)
        return job

    def busy(self) -> bool:
        """Predictions are waiting, running or being handed back (explanations pause for them)."""
        return self.running or self.waiting_texts > 0 or self.in_flight > 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no prediction is busy, ``timeout`` seconds at most; whether none is."""
        return self._idle.wait(timeout)

    def _settle(self) -> None:
        if self.busy():
            self._idle.clear()
        else:
            self._idle.set()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.running = True
            self._settle()
            try:
                self._run_batch(job)
            finally:
                self.running = False
                self._settle()

    def _run_batch(self, job: _Job) -> None:
        """``job`` and the jobs waiting behind it, up to ``max_batch_texts`` texts, as one batch per model."""
        jobs, n = [self._taken(job)], len(job.texts)
        while n < self.max_batch_texts:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(self._taken(nxt))
            n += len(nxt.texts)
        if self.metrics is not None:
            self.metrics.batch_texts.observe(n)
            self.metrics.batch_requests.observe(len(jobs))
        groups: dict[int, list[_Job]] = {}
        for j in jobs:
            if j.future.set_running_or_notify_cancel():  # False: the client went away, skip its texts
                groups.setdefault(id(j.model), []).append(j)
        for group in groups.values():
            try:
                self._run_group(group)
            except Exception:  # never let one batch stop the inference thread
                log.exception("inference batch failed")
                self._count_error()
                for j in group:
                    if not j.future.done():
                        j.future.set_exception(RuntimeError("inference failed"))

    def _count_error(self) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels("inference").inc()

    def _run_group(self, group: list[_Job]) -> None:
        """One forward pass for the group; if it fails, one per request, so only the culprit's request fails."""
        texts = [t for j in group for t in j.texts]
        try:
            predictions = group[0].model.classifier.predict(texts)
        except Exception as exc:
            if len(group) > 1:
                log.warning("a batch of %d requests failed (%s); retrying them one by one", len(group), exc)
                for j in group:
                    self._run_group([j])
                return
            self._count_error()
            group[0].future.set_exception(exc)
            return
        start = 0
        for j in group:
            j.future.set_result(predictions[start : start + len(j.texts)])
            start += len(j.texts)
