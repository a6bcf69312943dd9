"""The API's routes. Each takes what it needs (config, model store, batcher) as a FastAPI dependency that reads
the app's state, which ``app.create_app`` and its lifespan fill in."""

import asyncio
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from pipeline.config import Config
from pipeline.serving.batcher import Batcher
from pipeline.serving.schemas import PredictRequest, PredictResponse
from pipeline.serving.store import ModelStore

DEMO_PAGE = Path(__file__).with_name("static") / "demo.html"

router = APIRouter()


# async dependencies run on the event loop; plain functions would each cost a trip through the thread pool
async def get_config(request: Request) -> Config:
    return request.app.state.cfg


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


async def checked_request(body: PredictRequest, cfg: Annotated[Config, Depends(get_config)]) -> PredictRequest:
    """The request body, within the config's limits (``serve.max_texts``, ``serve.max_chars``)."""
    problem = body.limit_problem(cfg.serve.max_texts, cfg.serve.max_chars)
    if problem is not None:
        # shaped like pydantic's error for a failed model validator, so it answers like every other bad request
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": f"Value error, {problem}"}])
    return body


Store = Annotated[ModelStore, Depends(get_store)]


@cache
def demo_page() -> str:
    return DEMO_PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def demo() -> HTMLResponse:
    return HTMLResponse(demo_page())


@router.get("/health", summary="liveness and the served model")
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


@router.get("/model", summary="the served model: version, labels, data hash, metrics, backend and parity check")
async def model_info(
    store: Store,
    version: str | None = Query(None, description="a registry version; default: the champion"),
) -> dict[str, Any]:
    loaded = await asyncio.to_thread(store.get, version)
    aliases = await asyncio.to_thread(store.aliases_of, loaded.version)
    return loaded.info(aliases)


@router.get("/models", summary="registered versions, newest first, with aliases and metrics")
def list_models(store: Store) -> dict[str, Any]:
    champion = store.champion
    return {"model": store.name, "serving": champion.version if champion else None, "versions": store.versions()}


@router.post("/reload", summary="look for a new champion now (also done every refresh_seconds)")
async def reload(store: Store) -> dict[str, Any]:
    changed = await asyncio.to_thread(store.refresh)
    champion = store.champion
    return {"changed": changed, "version": champion.version if champion else None, "last_error": store.last_error}


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="classify one text or a batch",
    responses={
        413: {"description": "body too large"},
        422: {"description": "bad request, with the reason"},
        404: {"description": "unknown model version"},
        503: {"description": "no model loaded yet"},
    },
)
async def predict(
    request: Annotated[PredictRequest, Depends(checked_request)],
    store: Store,
    batcher: Annotated[Batcher, Depends(get_batcher)],
) -> dict[str, Any]:
    version = None if request.version is None else str(request.version)
    loaded = store.champion if version is None else None
    if loaded is None:
        loaded = await asyncio.to_thread(store.get, version)
    predictions = await batcher.predict(loaded, request.all_texts())
    return {
        "model": loaded.name,
        "version": loaded.version,
        "backend": loaded.backend,
        "predictions": [
            {
                "label": p.label,
                "score": p.score,
                "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()},
                "labels": list(p.labels),
            }
            for p in predictions
        ],
    }
