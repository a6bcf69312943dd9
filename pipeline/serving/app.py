"""The REST API and demo page over the model registry (`emotion serve`).

``create_app(cfg)`` builds a FastAPI app that serves ``models:/<name>@champion``:

- ``POST /predict``  one text or a batch; label, every label's probability and the model version
- ``POST /explain``  one text: each word's attribution to the predicted (or a given) label, Integrated Gradients
- ``GET /health``    is a model loaded, which version and backend
- ``GET /model``     version, labels, data hash, metrics, backend and its parity check
- ``GET /models``    the registry's versions (the demo page's version picker)
- ``POST /reload``   look for a new champion now
- ``GET /metrics``   Prometheus metrics: requests, latency, batches, labels, confidence, reloads, shadow agreement
- ``GET /``          the demo page; ``/openapi.json`` and ``/docs`` the schema

The pieces: ``routes`` (the endpoints), ``schemas`` (their bodies), ``handlers`` (errors as HTTP answers),
``timeouts`` (stalled headers and bodies), ``store`` (loaded versions and hot reload), ``batcher`` (one inference
thread), ``explainer`` (explanations on threads and a budget of their own), ``backends`` (fp32, bf16, int8 and the
parity check that guards them), ``metrics`` (Prometheus), ``shadow`` (a second alias scored in the background,
``serve.shadow``); ``serve.canary_fraction`` of the traffic goes to ``serve.canary_alias``.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.config import Config
from pipeline.serving import handlers, routes
from pipeline.serving.batcher import Batcher
from pipeline.serving.explainer import Explainer
from pipeline.serving.metrics import ServeMetrics, TrackRequests, refresh
from pipeline.serving.periodic import start_periodic
from pipeline.serving.shadow import Shadow
from pipeline.serving.siblings import WorkerContext, start_reload_watcher
from pipeline.serving.store import ModelStore, settle_heap

log = logging.getLogger(__name__)


def create_app(
    cfg: Config, store: ModelStore | None = None, *, start_refresh: bool = True, worker: WorkerContext | None = None
) -> FastAPI:
    """The FastAPI app; the model store (``store``, else one made from ``cfg``) loads the champion at startup.
    ``worker``: this process's place among several serving one port (``serve.workers``), None when alone."""
    serve = cfg.serve
    app = FastAPI(
        title="emotion-pipeline",
        version="1",
        summary="Emotion classification from the MLflow registry champion",
        description=f"Serves `models:/{cfg.mlflow.registered_model}@{serve.alias}`; picks up a new champion without "
        f"a restart. Limits: {serve.max_texts} texts per request, {serve.max_chars} characters per text.",
        lifespan=partial(lifespan, store=store, start_refresh=start_refresh),
    )
    app.state.cfg = cfg
    app.state.shadow = None
    app.state.worker = worker
    handlers.install(app)
    # a browser page on a rebound DNS name must not reach a loopback server: only known Host headers (400 otherwise)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*serve.allowed_hosts, serve.host])
    # added last, so outermost: it also counts the 400s of the Host check and the 413s of the body limit
    app.add_middleware(TrackRequests)
    app.include_router(routes.router)
    if worker is not None:
        app.add_api_route(
            "/worker",
            routes.worker_info,
            methods=["GET"],
            summary="which server process answered: its index among serve.workers and its process id",
            dependencies=[Depends(routes.admin)],
        )
    paths = [getattr(route, "path", None) for route in [*app.routes, *routes.router.routes]]
    metrics_dir = worker.metrics_dir if worker is not None else None
    app.state.metrics = ServeMetrics(app.state, {path for path in paths if isinstance(path, str)}, metrics_dir)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI, store: ModelStore | None, start_refresh: bool) -> AsyncIterator[None]:
    """Load the champion before the first request, run the inference thread and the periodic champion check."""
    cfg: Config = app.state.cfg
    metrics: ServeMetrics = app.state.metrics
    models = store if store is not None else await asyncio.to_thread(ModelStore, cfg)
    app.state.store = models
    await asyncio.to_thread(refresh, models, metrics)
    if models.champion is None:
        log.warning("serving without a model: %s", models.last_error)
    batcher = Batcher(cfg.serve.max_batch_texts, metrics, cfg.serve.max_queue)
    batcher.start()
    app.state.batcher = batcher
    explainer = Explainer(cfg.serve.explain_concurrency, cfg.serve.explain_queue, batcher.wait_idle)
    await warmed(explainer, models)
    app.state.explainer = explainer
    shadow = Shadow(cfg, models, batcher, metrics) if cfg.serve.shadow else None
    if shadow is not None:
        shadow.start()
    app.state.shadow = shadow
    stop_refresh = start_refresher(models, metrics, cfg.serve.refresh_seconds) if start_refresh else None
    worker: WorkerContext | None = app.state.worker
    stop_watch = start_reload_watcher(worker, partial(refresh, models, metrics)) if worker is not None else None
    settle_heap()  # what start-up loaded stays out of the collector's full passes
    try:
        yield
    finally:
        if stop_watch is not None:
            stop_watch()
        if stop_refresh is not None:
            stop_refresh()
        if shadow is not None:
            shadow.stop()  # before the batcher: it may be waiting for an inference
        batcher.stop()
        explainer.stop()


async def warmed(explainer: Explainer, models: ModelStore) -> None:
    """The explainer ready for the champion; a failure here is the first explanation's to report."""
    try:
        await asyncio.wrap_future(explainer.warm(models.champion.classifier if models.champion else None))
    except Exception as exc:
        log.warning("could not prepare explanations ahead: %s", exc)


def start_refresher(models: ModelStore, metrics: ServeMetrics, seconds: float) -> Callable[[], None] | None:
    """A thread that looks for a new champion every ``seconds`` (none for 0); returns how to stop it."""
    if seconds <= 0:
        return None
    return start_periodic("emotion-refresh", seconds, partial(refresh, models, metrics))
