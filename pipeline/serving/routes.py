"""The API's routes. Each takes what it needs (config, model store, batcher) as a FastAPI dependency that reads
the app's state, which ``app.create_app`` and its lifespan fill in."""

import asyncio
import hmac
import random
import time
from collections.abc import Awaitable
from functools import cache, partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.config import Config
from pipeline.serving.batcher import Batcher
from pipeline.serving.explainer import Explainer
from pipeline.serving.handlers import StrictJSONRoute
from pipeline.serving.metrics import ServeMetrics, refresh
from pipeline.serving.schemas import (
    ErrorResponse,
    ExplainRequest,
    ExplainResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    normalised_version,
    predict_body,
)
from pipeline.serving.shadow import Shadow
from pipeline.serving.siblings import WorkerContext, reload_siblings
from pipeline.serving.store import LoadedModel, ModelStore

DEMO_PAGE = Path(__file__).with_name("static") / "demo.html"

router = APIRouter(route_class=StrictJSONRoute)


# async dependencies run on the event loop; plain functions would each cost a trip through the thread pool
async def get_config(request: Request) -> Config:
    return request.app.state.cfg


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_explainer(request: Request) -> Explainer:
    return request.app.state.explainer


async def get_metrics(request: Request) -> ServeMetrics:
    return request.app.state.metrics


def invalid(where: tuple[str, ...], problem: str) -> RequestValidationError:
    """A 422 shaped like pydantic's error for a failed validator, so it answers like every other bad request."""
    return RequestValidationError([{"type": "value_error", "loc": where, "msg": f"Value error, {problem}"}])


def checked_version(version: str | int | None, where: tuple[str, ...]) -> str | None:
    try:
        return normalised_version(version)
    except ValueError as exc:
        raise invalid(where, str(exc)) from None


def checked_request(body: PredictRequest, cfg: Config) -> PredictRequest:
    """The request body, within the config's limits (``serve.max_texts``, ``serve.max_chars``), its version
    normalised."""
    problem = body.limit_problem(cfg.serve.max_texts, cfg.serve.max_chars)
    if problem is not None:
        raise invalid(("body",), problem)
    return body.model_copy(update={"version": checked_version(body.version, ("body", "version"))})


# declared, so the schema says how to authenticate; admin() answers the 401 (auto_error=False)
bearer = HTTPBearer(auto_error=False, description="serve.admin_token, when it is set")


async def admin(
    cfg: Annotated[Config, Depends(get_config)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """With ``serve.admin_token`` set, the caller must send ``Authorization: Bearer <token>`` (401 otherwise)."""
    token = cfg.serve.admin_token
    if token is None:
        return
    if credentials is None or not hmac.compare_digest(credentials.credentials.strip().encode(), token.encode()):
        raise HTTPException(
            status_code=401,
            detail="this endpoint needs the admin token: send 'Authorization: Bearer <serve.admin_token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


Store = Annotated[ModelStore, Depends(get_store)]
Metrics = Annotated[ServeMetrics, Depends(get_metrics)]


def refusals(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: each status with its description and the ``ErrorResponse`` body all refusals have."""
    return {code: {"model": ErrorResponse, "description": text} for code, text in described.items()}


BODY_REFUSALS = {
    408: "the body did not arrive within serve.body_timeout_seconds",
    413: "body too large",
    422: "bad request, with the reason",
}
ADMIN_REFUSALS = {401: "serve.admin_token is set and the request does not send it as a Bearer token"}


@cache
def demo_page() -> str:
    return DEMO_PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def demo() -> HTMLResponse:
    return HTMLResponse(demo_page())


@router.get(
    "/health",
    summary="liveness and the served model",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "no model loaded yet"}},
)
def health(store: Store) -> JSONResponse:
    champion = store.champion
    body = {
        "status": "ok" if champion else "no model",
        "model": store.name,
        "version": champion.version if champion else None,
        "backend": champion.backend if champion else None,
        "last_check": (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(store.last_check)) if store.last_check else None
        ),
        "last_error": store.last_error,
    }
    return JSONResponse(status_code=200 if champion else 503, content=body)


@router.get(
    "/model",
    summary="the served model: version, labels, data hash, metrics, backend and parity check",
    responses=refusals(
        {
            404: "unknown model version",
            422: "the version is not a positive integer in the registry's range",
            429: "another version was loaded moments ago; see Retry-After",
            503: "no model loaded yet, or the registry could not be read",
        }
    ),
)
async def model_info(
    store: Store,
    version: str | None = Query(None, description="a registry version (a positive integer); default: the champion"),
) -> dict[str, Any]:
    wanted = checked_version(version, ("query", "version"))
    loaded = await asyncio.to_thread(partial(store.get, wanted, throttle=True))
    aliases = await asyncio.to_thread(store.aliases_of, loaded.version)
    return loaded.info(aliases)


@router.get(
    "/models",
    summary="registered versions, newest first, with aliases and metrics",
    dependencies=[Depends(admin)],
    responses=refusals(ADMIN_REFUSALS),
)
def list_models(store: Store) -> dict[str, Any]:
    champion = store.champion
    return {"model": store.name, "serving": champion.version if champion else None, "versions": store.versions()}


@router.post(
    "/reload",
    summary="look for a new champion now (also done every refresh_seconds)",
    dependencies=[Depends(admin)],
    responses=refusals(ADMIN_REFUSALS | BODY_REFUSALS),
)
async def reload(http: Request, store: Store, metrics: Metrics) -> dict[str, Any]:
    changed = await asyncio.to_thread(refresh, store, metrics)
    champion = store.champion
    answer: dict[str, Any] = {
        "changed": changed,
        "version": champion.version if champion else None,
        "last_error": store.last_error,
    }
    worker: WorkerContext | None = http.app.state.worker
    if worker is not None:  # one of several server processes: the others check too before the answer
        checked = await reload_siblings(worker, http.app.state.cfg.serve.request_timeout_seconds)
        answer["workers"] = {"checked": checked, "of": worker.count}
    return answer


T = TypeVar("T")


async def answered_within(work: Awaitable[T], limit: float, detail: str) -> T:
    """``work``'s result, or 504 with ``detail`` after ``limit`` seconds (serve.request_timeout_seconds)."""
    try:
        return await asyncio.wait_for(work, limit)
    except TimeoutError:
        raise HTTPException(status_code=504, detail=detail) from None


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="classify one text or a batch",
    responses=refusals(
        BODY_REFUSALS
        | {
            404: "unknown model version",
            429: "another version was loaded moments ago; see Retry-After",
            503: "no model loaded yet, or too many texts waiting (see Retry-After)",
            504: "the inference took longer than serve.request_timeout_seconds",
        }
    ),
)
async def predict(body: PredictRequest, http: Request) -> Response:
    # the app's parts straight from its state: as dependencies, resolving them took more event-loop time per
    # request than the rest of the route (bench/README.md, "Where API throughput was lost")
    state = http.app.state
    cfg: Config = state.cfg
    store: ModelStore = state.store
    batcher: Batcher = state.batcher
    metrics: ServeMetrics = state.metrics
    shadow: Shadow | None = state.shadow
    request = checked_request(body, cfg)
    texts = request.all_texts()
    role, loaded = await chosen_model(store, cfg, request.version)
    limit = cfg.serve.request_timeout_seconds
    predictions = await answered_within(
        batcher.predict(loaded, texts), limit, f"no answer within {limit:g}s; retry later"
    )
    metrics.observe_predictions(loaded.version, role, predictions)
    if role == "champion" and shadow is not None:
        shadow.offer(loaded, texts, predictions)
    answer = predict_body(loaded.name, loaded.version, loaded.backend, predictions)
    return Response(answer, media_type="application/json")  # the schema stays response_model's, for /docs


@router.post(
    "/explain",
    response_model=ExplainResponse,
    summary="each word's attribution to the predicted (or a given) label, by Integrated Gradients",
    responses=refusals(
        BODY_REFUSALS
        | {
            422: "bad request or unknown label, with the reason",
            404: "unknown model version",
            429: "all explanation slots taken, or a version loaded moments ago; see Retry-After",
            503: "no model loaded yet",
            504: "the explanation took longer than serve.request_timeout_seconds",
        }
    ),
)
async def explain(
    body: ExplainRequest,
    store: Store,
    explainer: Annotated[Explainer, Depends(get_explainer)],
    cfg: Annotated[Config, Depends(get_config)],
) -> dict[str, Any]:
    from dataclasses import asdict

    problem = body.limit_problem(min(cfg.serve.max_chars, cfg.serve.explain_max_chars))
    if problem is not None:
        raise invalid(("body",), problem)
    version = checked_version(body.version, ("body", "version"))
    loaded = await asyncio.to_thread(partial(store.get, version, throttle=version is not None))
    if body.label is not None and body.label not in loaded.labels:
        known = ", ".join(loaded.labels)
        raise invalid(("body", "label"), f"unknown label '{body.label}': version {loaded.version} knows {known}")
    steps, limit = cfg.serve.explain_steps, cfg.serve.request_timeout_seconds
    # on timeout an explanation still waiting is skipped; one already running finishes on its own thread
    found = await answered_within(
        explainer.explain(loaded.classifier, body.text, body.label, steps),
        limit,
        f"no explanation within {limit:g}s ({steps} integration steps); retry later or with a shorter text",
    )
    served = {"model": loaded.name, "version": loaded.version, "backend": loaded.backend, "n_steps": steps}
    return served | asdict(found)


async def chosen_model(store: ModelStore, cfg: Config, version: str | int | None) -> tuple[str, LoadedModel]:
    """Who answers, and in which role: the version asked for ("pinned"), else a ``serve.canary_fraction`` share
    for the canary alias's version ("canary"), else the champion."""
    if version is not None:
        loaded = await asyncio.to_thread(partial(store.get, str(version), throttle=True))
        return ("champion" if loaded is store.champion else "pinned"), loaded
    fraction = cfg.serve.canary_fraction
    canary = store.follower(cfg.serve.canary_alias) if fraction > 0 and random.random() < fraction else None
    if canary is not None:
        return "canary", canary
    champion = store.champion
    return "champion", champion if champion is not None else await asyncio.to_thread(store.get, None)


async def worker_info(http: Request) -> dict[str, Any]:
    """Which of the server processes answered (``GET /worker``, added when ``serve.workers`` > 1): its index,
    process id and torch threads, to check how connections spread and how the cores were divided."""
    import os

    import torch

    worker: WorkerContext = http.app.state.worker
    return {"index": worker.index, "of": worker.count, "pid": os.getpid(), "torch_threads": torch.get_num_threads()}


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def prometheus(metrics: Metrics) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(metrics.exposed), media_type=CONTENT_TYPE_LATEST)
