"""Explanations on a budget of their own (``Explainer``), so that they cannot starve predictions.

An explanation (Integrated Gradients: ``serve.explain_steps`` forward and backward passes) costs as much as
hundreds of predictions. It runs on its own threads, never on the batcher's inference thread:
``serve.explain_concurrency`` at once, at the lowest CPU priority (Linux niceness is per thread), so a
prediction waiting for a core gets it first. Threads of one process also share the interpreter lock, which no
priority reaches: so an explanation pauses before each transformer block while predictions are waiting, running
or being handed back (up to ``MAX_PAUSE_SECONDS`` at a time, so that it still progresses under a steady load).
At most ``serve.explain_queue`` more may wait; beyond that an explanation is refused at once (``ExplainBusy``,
429 with Retry-After) instead of queueing without end.

Each explaining thread uses its own fp32 copy of the model and of the tokenizer: Captum hooks the embedding
layer while it integrates, and a fast tokenizer may not be called from two threads at once, so sharing them with
the inference thread would corrupt predictions or fail them.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from pipeline.errors import PipelineError

LOWEST_PRIORITY = 19  # niceness of the explaining threads
MAX_PAUSE_SECONDS = 0.05  # longest an explanation waits for predictions before one transformer block


class ExplainBusy(PipelineError):
    """Every explanation slot is taken (serve.explain_concurrency running + serve.explain_queue waiting): 429."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def lowest_priority() -> None:
    """Give the calling thread (and the threads it starts, e.g. torch's) the lowest CPU priority, where the
    platform has per-thread priorities (Linux); elsewhere explanations keep the normal priority."""
    if sys.platform.startswith("linux"):
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


def pausing(model: Any, wait_idle: Callable[[float], Any]) -> Any:
    """``model`` with a pause before each of its transformer blocks (the modules of its ModuleLists):
    ``wait_idle(MAX_PAUSE_SECONDS)``, which returns when predictions are idle or that time has passed."""
    import torch

    def pause(*_: Any) -> None:
        wait_idle(MAX_PAUSE_SECONDS)

    for blocks in [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]:
        for block in blocks:
            block.register_forward_pre_hook(pause)
    return model


def private_predictor(predictor: Any, wait_idle: Callable[[float], Any]) -> Any:
    """A copy of a ``Predictor`` with a model and a tokenizer of its own, the model in fp32 (gradients: the
    served weights cast up or dequantized) and pausing for predictions (``pausing``)."""
    from pipeline.model.explain import float_model

    if not hasattr(predictor.model, "parameters"):  # an ONNX Runtime session: no gradients, no torch weights kept
        raise PipelineError("explanations need a torch backend: serve this model with serve.backend=torch-bf16")
    own = copy.copy(predictor)
    model = float_model(predictor.model)
    own.model = copy.deepcopy(model) if model is predictor.model else model
    own.tokenizer = copy.deepcopy(predictor.tokenizer)
    pausing(own.model, wait_idle)
    return own


class Explainer:
    """Explanations on ``concurrency`` low-priority threads, with at most ``queue`` more waiting; before each
    transformer block they call ``wait_idle(seconds)`` (the batcher's: it returns when no prediction is busy)."""

    def __init__(self, concurrency: int, queue: int, wait_idle: Callable[[float], Any] = lambda seconds: True) -> None:
        self.concurrency = concurrency
        self.wait_idle = wait_idle
        self.capacity = concurrency + queue
        self.admitted = 0  # running or waiting
        self.mean_seconds = 1.0  # an explanation's duration (moving average), for Retry-After
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="emotion-explain", initializer=lowest_priority)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def warm(self, classifier: Any | None) -> Future:
        """Pay on an explaining thread, before the first request, what the first explanation would: importing
        Captum and (with ``classifier``) copying the model. Paid during a burst, that holds the interpreter lock
        long enough to delay predictions."""
        return self._pool.submit(self._warm, classifier)

    def _warm(self, classifier: Any | None) -> None:
        import captum.attr  # noqa: F401

        if classifier is not None:
            self._predictor(classifier)

    async def explain(self, classifier: Any, text: str, label: str | None, steps: int) -> Any:
        """The ``Explanation`` of ``text`` by a served ``FastClassifier``; ExplainBusy when no slot is free.
        Cancelling skips an explanation that has not started."""
        with self._lock:
            if self.admitted >= self.capacity:
                raise ExplainBusy(
                    f"too many explanations at once ({self.admitted} running or waiting); "
                    "retry later (serve.explain_concurrency, serve.explain_queue)",
                    self.mean_seconds * self.admitted / self.concurrency,
                )
            self.admitted += 1
        future = self._pool.submit(self._explain, classifier, text, label, steps)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, future: Future) -> None:
        with self._lock:
            self.admitted -= 1

    def _explain(self, classifier: Any, text: str, label: str | None, steps: int) -> Any:
        from pipeline.model import explain as attributions

        start = time.perf_counter()
        found = attributions.explain(self._predictor(classifier), text, label, steps)
        with self._lock:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * (time.perf_counter() - start)
        return found

    def _predictor(self, classifier: Any) -> Any:
        """This thread's own copy of ``classifier``'s predictor, made on first use and dropped with the
        classifier (when the store unloads its version)."""
        copies: weakref.WeakKeyDictionary[Any, Any] | None = getattr(self._local, "copies", None)
        if copies is None:
            copies = self._local.copies = weakref.WeakKeyDictionary()
        own = copies.get(classifier)
        if own is None:
            own = copies[classifier] = private_predictor(classifier.predictor, self.wait_idle)
        return own
