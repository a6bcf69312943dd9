"""Shadow scoring (``serve.shadow``): the version holding another alias (e.g. challenger) also scores the
champion's requests, off the request path, and its agreement with the champion is measured.

A request answered by the champion is offered to a bounded queue (a ``serve.shadow_fraction`` sample of them);
when the queue is full the request is dropped and counted, so the shadow never slows an answer down. One worker
thread sends the texts through the service's inference thread (the only one that runs models) and compares the
labels and probabilities. Agreement goes to ``/metrics`` at once and, every ``serve.shadow_log_seconds``, to the
shadow version's registry tags (``pipeline.registry.shadow_stats``), which `emotion promote` can require.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config
from pipeline.registry import shadow_stats
from pipeline.registry.shadow_stats import ShadowStats
from pipeline.serving.batcher import Batcher
from pipeline.serving.metrics import ServeMetrics
from pipeline.serving.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    champion: LoadedModel
    texts: list[str]
    predictions: list[Any]


def agreement(ours: Any, theirs: Any) -> tuple[bool, float]:
    """Same labels? and the total variation distance between the two probability vectors (0 = identical, 1 =
    disjoint)."""
    keys = set(ours.probabilities) | set(theirs.probabilities)
    distance = 0.5 * sum(abs(ours.probabilities.get(k, 0.0) - theirs.probabilities.get(k, 0.0)) for k in keys)
    return set(ours.labels) == set(theirs.labels), distance


class Shadow:
    """The shadow worker: a bounded queue, one thread, the running ``ShadowStats`` of the current pair."""

    def __init__(self, cfg: Config, store: ModelStore, batcher: Batcher, metrics: ServeMetrics) -> None:
        serve = cfg.serve
        if not serve.shadow:
            raise ValueError("serve.shadow names no alias")
        self.cfg, self.store, self.batcher, self.metrics = cfg, store, batcher, metrics
        self.alias = serve.shadow
        self.tally: ShadowStats | None = None  # the current champion/shadow pair, read by /metrics
        self._run_id: str | None = None  # the shadow version's training run, for its metrics
        self._recorded = 0  # tally.samples when last written to the registry
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=serve.shadow_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emotion-shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the request in hand, write the last numbers, stop (the batcher must still be running)."""
        self._stop.set()
        self._thread.join(timeout=60)

    def pending(self) -> int:
        return self._queue.qsize()

    def offer(self, champion: LoadedModel, texts: list[str], predictions: list[Any]) -> None:
        """Queue a champion-answered request for shadow scoring (a sampled share); never blocks."""
        fraction = self.cfg.serve.shadow_fraction
        if fraction < 1 and random.random() >= fraction:
            return
        try:
            self._queue.put_nowait(_Job(champion, texts, predictions))
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def _run(self) -> None:
        every = self.cfg.serve.shadow_log_seconds
        next_write = time.monotonic() + every
        while not self._stop.is_set():
            try:
                job: _Job | None = self._queue.get(timeout=max(0.01, min(0.5, next_write - time.monotonic())))
            except queue.Empty:
                job = None
            if job is not None:
                self._guarded("shadow", self._score, job)
            if time.monotonic() >= next_write:
                self._guarded("shadow_log", self._write)
                next_write = time.monotonic() + every
        self._guarded("shadow_log", self._write)

    def _guarded(self, kind: str, step: Any, *args: Any) -> None:
        """Run one step; a failure is logged and counted, and the worker goes on."""
        try:
            step(*args)
        except Exception:
            log.exception("%s failed", kind)
            self.metrics.errors.labels(kind).inc()

    def _score(self, job: _Job) -> None:
        shadow = self.store.follower(self.alias)
        if shadow is None or shadow.version == job.champion.version:
            return  # no such alias (yet), or it is the champion itself
        tally = self._tally_for(job.champion, shadow)
        theirs = self.batcher.submit(shadow, job.texts).result(timeout=120)
        labels = (job.champion.version, shadow.version)
        for ours, other in zip(job.predictions, theirs, strict=True):
            agreed, distance = agreement(ours, other)
            tally.add(agreed, distance)
            self.metrics.shadow_samples.labels(*labels).inc()
            self.metrics.shadow_agreements.labels(*labels).inc(int(agreed))
            self.metrics.shadow_distance.labels(*labels).observe(distance)

    def _tally_for(self, champion: LoadedModel, shadow: LoadedModel) -> ShadowStats:
        """The running stats of this pair; a new pair starts from what the registry already holds for it."""
        tally = self.tally
        if tally is not None and (tally.champion, tally.shadow) == (champion.version, shadow.version):
            return tally
        self._write()  # the previous pair's last numbers
        tags = self.store.client.get_model_version(self.store.name, shadow.version).tags
        self.tally = shadow_stats.from_tags(dict(tags), champion.version, shadow.version)
        self._run_id, self._recorded = shadow.run_id, self.tally.samples
        log.info(
            "shadow: version %s beside champion %s (%d texts so far)",
            shadow.version,
            champion.version,
            self.tally.samples,
        )
        return self.tally

    def _write(self) -> None:
        tally = self.tally
        if tally is None or tally.samples == self._recorded:
            return
        shadow_stats.record(self.cfg.registry, self.store.client, tally, self._run_id)
        self._recorded = tally.samples
