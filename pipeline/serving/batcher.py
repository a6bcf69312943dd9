"""One inference thread for the API (``Batcher``): it gathers the texts of concurrent requests into one
length-sorted batch (up to ``serve.max_batch_texts``), so the two cores stay busy with large matrix products
instead of many threads fighting over them. Other work for the model (an explanation) runs on the same thread
as one call on its own, so it delays waiting predictions by at most that one call.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeline.serving.metrics import ServeMetrics
from pipeline.serving.store import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class _Job:
    model: LoadedModel
    texts: list[str]
    future: Future = field(default_factory=Future)
    call: Callable[[], Any] | None = None  # run alone instead of predicting ``texts``


class Batcher:
    """One inference thread: drains the queue and runs the texts of all waiting requests together."""

    def __init__(self, max_batch_texts: int, metrics: ServeMetrics | None = None) -> None:
        self.max_batch_texts = max_batch_texts
        self.metrics = metrics
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emotion-inference", daemon=True)
        self._held: _Job | None = None  # a call met while gathering a batch: it runs next, on its own

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def pending(self) -> int:
        """Requests waiting for the inference thread (approximate, for /metrics)."""
        return self._queue.qsize()

    def submit(self, model: LoadedModel, texts: list[str]) -> Future:
        """Queue texts for ``model``; the future's result is their predictions (for threads, e.g. the shadow)."""
        job = _Job(model, texts)
        self._queue.put(job)
        return job.future

    async def predict(self, model: LoadedModel, texts: list[str]) -> Any:
        return await asyncio.wrap_future(self.submit(model, texts))

    async def run(self, model: LoadedModel, call: Callable[[], Any]) -> Any:
        """``call()``'s result, computed on the inference thread between batches (in queue order)."""
        job = _Job(model, [], call=call)
        self._queue.put(job)
        return await asyncio.wrap_future(job.future)

    def _run(self) -> None:
        while True:
            job, self._held = self._held or self._queue.get(), None
            if job is None:
                return
            if job.call is not None:
                self._run_call(job)
                continue
            jobs, n = [job], len(job.texts)
            while n < self.max_batch_texts:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if nxt.call is not None:
                    self._held = nxt
                    break
                jobs.append(nxt)
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

    def _run_call(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel() or job.call is None:
            return
        try:
            job.future.set_result(job.call())
        except Exception as exc:  # the caller gets it (a PipelineError becomes a 422)
            job.future.set_exception(exc)

    def _count_error(self) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels("inference").inc()

    def _run_group(self, group: list[_Job]) -> None:
        texts = [t for j in group for t in j.texts]
        try:
            predictions = group[0].model.classifier.predict(texts)
        except Exception as exc:
            self._count_error()
            for j in group:
                j.future.set_exception(exc)
            return
        start = 0
        for j in group:
            j.future.set_result(predictions[start : start + len(j.texts)])
            start += len(j.texts)
