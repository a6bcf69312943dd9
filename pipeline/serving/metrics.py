"""Prometheus metrics for the API (``GET /metrics``), in a registry of the app's own so that several apps in
one process (tests, benchmarks) never share counters. With several server processes (``serve.workers``) the
counters and histograms are prometheus-client's multiprocess files in a folder the processes share, and a scrape
adds up all of them (``MultiProcessCollector``); what is read at scrape time is the answering process's.

Counted as things happen: requests (by route, method and status) and their latency, inference batch sizes,
predicted labels and confidence, reload outcomes, errors, and the shadow's agreement with the champion. Read at
scrape time (so never stale): the served versions and backends, and the depth of the inference and shadow queues.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Message, Receive, Scope, Send

from pipeline.serving.middleware import HttpMiddleware

if TYPE_CHECKING:
    from pipeline.serving.store import ModelStore

PREFIX = "emotion"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
DISTANCE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class ServeMetrics:
    """The app's metrics; ``state`` is the app's state (model store, batcher, shadow), read at scrape time, and
    ``paths`` the app's routes (any other path is counted as "other", so that label values stay few).

    ``multiprocess_dir``: the folder of sibling processes' metric files (the process was started with
    ``PROMETHEUS_MULTIPROC_DIR`` set to it, so its counters are written there); ``exposed`` then adds them up."""

    def __init__(self, state: Any, paths: set[str], multiprocess_dir: Path | None = None) -> None:
        self.paths = frozenset(paths)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            f"{PREFIX}_http_request_seconds", "HTTP request latency", ["route", "method", "status"], registry=r
        )
        self.batch_texts = Histogram(
            f"{PREFIX}_batch_texts",
            "texts per inference batch (concurrent requests run together)",
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.batch_requests = Histogram(
            f"{PREFIX}_batch_requests", "requests per inference batch", registry=r, buckets=BATCH_BUCKETS
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions", "texts classified, by predicted label", ["version", "role", "label"], registry=r
        )
        self.confidence = Histogram(
            f"{PREFIX}_prediction_confidence",
            "probability of the predicted label",
            ["version"],
            registry=r,
            buckets=PROBABILITY_BUCKETS,
        )
        self.reloads = Counter(
            f"{PREFIX}_reloads",
            "champion checks: swapped (a new version serves), unchanged, failed",
            ["result"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "internal failures: inference, reload, shadow, shadow_log", ["kind"], registry=r
        )
        self.shadow_samples = Counter(
            f"{PREFIX}_shadow_samples",
            "texts scored by both the champion and the shadow",
            ["champion", "shadow"],
            registry=r,
        )
        self.shadow_agreements = Counter(
            f"{PREFIX}_shadow_agreements",
            "shadow-scored texts given the champion's label",
            ["champion", "shadow"],
            registry=r,
        )
        self.shadow_distance = Histogram(
            f"{PREFIX}_shadow_prob_distance",
            "total variation distance between the two models' probabilities",
            ["champion", "shadow"],
            registry=r,
            buckets=DISTANCE_BUCKETS,
        )
        self.shadow_dropped = Counter(
            f"{PREFIX}_shadow_dropped", "requests not shadow-scored because the shadow queue was full", registry=r
        )
        self.exposed = r if multiprocess_dir is None else _all_processes(multiprocess_dir)
        self.exposed.register(_StateCollector(state))

    def observe_predictions(self, version: str, role: str, predictions: list[Any]) -> None:
        """Count the predicted labels and record their confidence."""
        for p in predictions:
            self.predictions.labels(version, role, p.label).inc()
            self.confidence.labels(version).observe(p.score)


def _all_processes(folder: Path) -> CollectorRegistry:
    """A registry that reads the counters and histograms of every process writing to ``folder``."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry(auto_describe=True)
    multiprocess.MultiProcessCollector(registry, str(folder))
    return registry


def refresh(models: ModelStore, metrics: ServeMetrics) -> bool:
    """``models.refresh()`` with its outcome counted; True if a new champion was swapped in."""
    follow_failures = models.follow_failures
    changed = models.refresh()
    failed = not changed and (models.last_error or "").startswith("reload failed")
    metrics.reloads.labels("swapped" if changed else ("failed" if failed else "unchanged")).inc()
    if failed:
        metrics.errors.labels("reload").inc()
    if models.follow_failures > follow_failures:
        metrics.errors.labels("follow").inc(models.follow_failures - follow_failures)
    return changed


class _StateCollector(Collector):
    """What the app is serving right now, read from its state at each scrape."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def describe(self) -> list[Any]:
        return []  # its metrics exist only once the app has started: not checked for name clashes up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = getattr(self.state, "store", None)
        info = GaugeMetricFamily(
            f"{PREFIX}_model_info", "served model versions (1 per role)", labels=["role", "alias", "version", "backend"]
        )
        if store is not None:
            for role, alias, model in store.serving():
                info.add_metric([role, alias, model.version, model.backend], 1)
        yield info
        batcher = getattr(self.state, "batcher", None)
        yield GaugeMetricFamily(
            f"{PREFIX}_inference_queue_depth",
            "requests waiting for the inference thread",
            value=batcher.pending() if batcher is not None else 0,
        )
        shadow = getattr(self.state, "shadow", None)
        if shadow is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_shadow_queue_depth", "requests waiting for the shadow", value=shadow.pending()
            )
            tally = shadow.tally
            if tally is not None and tally.samples:
                labels = ["champion", "shadow"]
                values = [tally.champion, tally.shadow]
                agreement = GaugeMetricFamily(
                    f"{PREFIX}_shadow_agreement_ratio",
                    "label agreement with the champion (including earlier runs)",
                    labels=labels,
                )
                agreement.add_metric(values, tally.agreement)
                distance = GaugeMetricFamily(
                    f"{PREFIX}_shadow_prob_distance_mean",
                    "mean total variation distance (including earlier runs)",
                    labels=labels,
                )
                distance.add_metric(values, tally.prob_distance)
                yield agreement
                yield distance


class TrackRequests(HttpMiddleware):
    """Count every request and time it, by route, method and status (500 when the app raised); plain ASGI for
    speed (see ``middleware.py`` and bench/README.md, "Where API throughput was lost")."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics: ServeMetrics = scope["app"].state.metrics
        path = scope["path"]
        route, start, status = path if path in metrics.paths else "other", time.perf_counter(), "500"

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            metrics.requests.labels(route, scope["method"], status).inc()
            metrics.latency.labels(route, scope["method"], status).observe(time.perf_counter() - start)
