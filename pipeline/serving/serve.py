"""The REST API and demo page over the model registry (`emotion serve`).

``create_app(cfg)`` builds a FastAPI app that serves ``models:/<name>@champion``:

- ``POST /predict``  one text or a batch; label, every label's probability and the model version
- ``GET /health``    is a model loaded, which version and backend
- ``GET /model``     version, labels, data hash, metrics, backend and its parity check
- ``GET /models``    the registry's versions (the demo page's version picker)
- ``POST /reload``   look for a new champion now
- ``GET /``          the demo page; ``/openapi.json`` and ``/docs`` the schema

Hot reload: a background thread (every ``serve.refresh_seconds``) and ``POST /reload`` look up the champion
alias; a new version is downloaded, loaded, parity-checked and warmed up completely before one reference swap
makes it current. A request takes the current model once and uses it to the end, so it never sees a
half-loaded model, and a failed load leaves the old model serving.

Inference runs on one worker thread that gathers the texts of concurrent requests into one length-sorted
batch (up to ``serve.max_batch_texts``): the two cores stay busy with large matrix products instead of
many threads fighting over them.
"""

# No `from __future__ import annotations` here: FastAPI must see the request models defined inside create_app.
import asyncio
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

DEMO_PAGE = Path(__file__).with_name("static") / "demo.html"


class ModelNotFound(PipelineError):
    """The requested model version does not exist (404), or no champion is loaded yet (503)."""

    def __init__(self, message: str, status_code: int = 404) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class LoadedModel:
    """A model version fully loaded and ready: nothing in it changes after construction."""

    name: str
    version: str
    classifier: Any  # pipeline.serving.backends.FastClassifier
    requested_backend: str
    parity: Any  # ParityReport | None
    tags: dict[str, str]
    run_id: str | None
    loaded_at: float
    load_seconds: float

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def backend(self) -> str:
        return self.classifier.backend

    def info(self, aliases: list[str] | None = None) -> dict[str, Any]:
        def number(key: str) -> float | None:
            try:
                return float(self.tags[key])
            except (KeyError, ValueError):
                return None

        return {
            "name": self.name,
            "version": self.version,
            "aliases": aliases or [],
            "labels": self.labels,
            "data_hash": self.tags.get("data_hash"),
            "metrics": {"accuracy": number("accuracy"), "macro_f1": number("macro_f1")},
            "run_id": self.run_id,
            "git_commit": self.tags.get("git_commit"),
            "backend": self.backend,
            "requested_backend": self.requested_backend,
            "parity": self.parity.to_dict() if self.parity is not None else None,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_seconds": round(self.load_seconds, 2),
        }


class ModelStore:
    """The served model versions: the champion (swapped atomically on reload) and a few others on demand."""

    def __init__(self, cfg: Config) -> None:
        from pipeline.registry import tracking

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in server logs
        import torch

        # inference threads; by default one core is left to the HTTP event loop, so that the two never fight
        # (on 2 cores a busy event loop makes 2 torch threads wait on each other at every operation)
        torch.set_num_threads(cfg.serve.threads or max(1, (os.cpu_count() or 2) - 1))
        self.cfg = cfg
        self.name = cfg.mlflow.registered_model
        self.client = tracking.client(cfg)
        self.champion: LoadedModel | None = None  # replaced by one assignment, never mutated
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._others: OrderedDict[str, LoadedModel] = OrderedDict()
        self._reload_lock = threading.Lock()  # one champion check at a time
        self._load_lock = threading.Lock()  # one model load at a time (memory, CPU)
        self._cache_lock = threading.Lock()  # guards _others
        self._parity_data, self._parity_error = self._read_parity_data()

    def _read_parity_data(self) -> tuple[Any, str | None]:
        from pipeline.serving.backends import FP32, load_parity_data

        serve = self.cfg.serve
        if serve.backend == FP32:
            return None, None
        source = serve.parity_source or self.cfg.data.source
        try:
            data = load_parity_data(
                self.cfg.data.model_copy(update={"source": source}), Path(self.cfg.project_dir).resolve()
            )
        except PipelineError as exc:
            log.warning("no parity data, so %s cannot be checked and fp32 will be served: %s", serve.backend, exc)
            return None, str(exc)
        log.info("parity data: %d test texts of %r", len(data.texts), source)
        return data, None

    def _version(self, version: str) -> "ModelVersion":
        """The registry's record of a version (tags, run id); ModelNotFound when there is none."""
        try:
            return self.client.get_model_version(self.name, version)
        except Exception as exc:
            raise ModelNotFound(f"{self.name} has no version {version}") from exc

    def _load(self, version: str, meta: "ModelVersion") -> LoadedModel:
        """Download, load, convert, parity-check and warm up one version (``meta``: its registry record);
        nothing shared is touched.

        Callers hold ``_load_lock`` (see ``_cached_or_load``).
        """
        from pipeline.registry import tracking
        from pipeline.serving.backends import build_classifier

        serve = self.cfg.serve
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f"emotion-serve-v{version}-"))
        try:
            folder = tracking.download_model(f"models:/{self.name}/{version}", tmp)
            classifier, parity = build_classifier(
                folder,
                serve.backend,
                self._parity_data,
                serve.parity_tolerance,
                self.cfg.model.max_length,
                serve.batch_size,
                self._parity_error,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.perf_counter() - start
        log.info("loaded %s version %s (%s) in %.1fs", self.name, version, classifier.backend, seconds)
        return LoadedModel(
            self.name, version, classifier, serve.backend, parity, dict(meta.tags), meta.run_id, time.time(), seconds
        )

    def refresh(self) -> bool:
        """Serve the alias's current version; True if a new model was swapped in."""
        from pipeline.registry import tracking

        with self._reload_lock:
            self.last_check = time.time()
            try:
                meta = tracking.version_by_alias(self.cfg, self.client, self.cfg.serve.alias)
                if meta is None:
                    self.last_error = f"no version of {self.name} has the alias '{self.cfg.serve.alias}' yet"
                    return False
                version = str(meta.version)
                current = self.champion
                if current is not None and current.version == version:
                    self.last_error = None
                    return False
                loaded = self._cached_or_load(version, meta)  # the alias lookup's record: no second read
                self.champion = loaded  # the swap: one reference assignment
                with self._cache_lock:
                    self._others.pop(version, None)
                if current is not None:
                    self._remember(current)
                self.last_error = None
                log.info(
                    "now serving %s version %s (was %s)", self.name, version, current.version if current else "none"
                )
                return True
            except Exception as exc:  # keep serving the old model; say why in /health
                self.last_error = f"reload failed: {exc}"
                log.exception("reload failed; still serving %s", self.champion.version if self.champion else "nothing")
                return False

    def _cached_or_load(self, version: str, meta: "ModelVersion | None" = None) -> LoadedModel:
        """A loaded version from the cache, else loaded now (``meta``: its registry record, when already read)."""
        with self._load_lock:
            with self._cache_lock:
                found = self._others.get(version)
            return found if found is not None else self._load(version, meta or self._version(version))

    def _remember(self, model: LoadedModel) -> None:
        with self._cache_lock:
            if self.cfg.serve.max_loaded_versions <= 0:
                return
            self._others[model.version] = model
            self._others.move_to_end(model.version)
            while len(self._others) > self.cfg.serve.max_loaded_versions:
                self._others.popitem(last=False)

    def get(self, version: str | None = None) -> LoadedModel:
        """The champion (``version`` None) or a given version, loaded on first use."""
        champion = self.champion
        if version is None or (champion is not None and champion.version == version):
            if champion is None:
                raise ModelNotFound(self.last_error or f"no {self.cfg.serve.alias} model loaded yet", 503)
            return champion
        found = self._cached_or_load(version)
        if found is not self.champion:
            self._remember(found)
        return found

    def versions(self) -> list[dict[str, Any]]:
        from pipeline.registry import tracking

        try:
            rows = tracking.list_versions(self.cfg, self.client)
        except PipelineError:
            return []
        with self._cache_lock:
            loaded = set(self._others) | ({self.champion.version} if self.champion else set())
        return [row | {"loaded": row["version"] in loaded} for row in rows]

    def aliases_of(self, version: str) -> list[str]:
        """The version's aliases; none when the registry cannot be read (the model's info is served anyway)."""
        from pipeline.registry import tracking

        try:
            return tracking.aliases_by_version(self.cfg, self.client).get(str(version), [])
        except Exception:  # PipelineError, or an unreachable tracking server
            return []


@dataclass
class _Job:
    model: LoadedModel
    texts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """One inference thread: drains the queue and runs the texts of all waiting requests together."""

    def __init__(self, max_batch_texts: int) -> None:
        self.max_batch_texts = max_batch_texts
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emotion-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def predict(self, model: LoadedModel, texts: list[str]) -> Any:
        job = _Job(model, texts)
        self._queue.put(job)
        return await asyncio.wrap_future(job.future)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, n = [job], len(job.texts)
            while n < self.max_batch_texts:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(nxt)
                n += len(nxt.texts)
            groups: dict[int, list[_Job]] = {}
            for j in jobs:
                if j.future.set_running_or_notify_cancel():  # False: the client went away, skip its texts
                    groups.setdefault(id(j.model), []).append(j)
            for group in groups.values():
                try:
                    self._run_group(group)
                except Exception:  # never let one batch stop the inference thread
                    log.exception("inference batch failed")
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(RuntimeError("inference failed"))

    @staticmethod
    def _run_group(group: list[_Job]) -> None:
        texts = [t for j in group for t in j.texts]
        try:
            predictions = group[0].model.classifier.predict(texts)
        except Exception as exc:
            for j in group:
                j.future.set_exception(exc)
            return
        start = 0
        for j in group:
            j.future.set_result(predictions[start : start + len(j.texts)])
            start += len(j.texts)


def _readable(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list as one sentence per problem: 'texts[2]: text is empty'."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')})")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ""
        for p in loc:
            where += f"[{p}]" if p.isdigit() else (f".{p}" if where else p)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def create_app(cfg: Config, store: ModelStore | None = None, *, start_refresh: bool = True) -> Any:
    """The FastAPI app; the model store loads the champion at startup (in the lifespan)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

    serve = cfg.serve
    max_body = serve.max_texts * (serve.max_chars * 6 + 16) + 4096  # generous JSON escaping allowance

    class PredictRequest(BaseModel):
        """Give either ``text`` or ``texts``."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {"text": "i feel wonderful today"},
                    {"texts": ["i feel wonderful today", "my hands are shaking before the exam"], "version": "1"},
                ]
            },
        )
        text: StrictStr | None = Field(None, description=f"one text, 1 to {serve.max_chars} characters")
        texts: list[StrictStr] | None = Field(
            None, description=f"1 to {serve.max_texts} texts of 1 to {serve.max_chars} characters each"
        )
        version: StrictStr | StrictInt | None = Field(None, description="a registry version; default: the champion")

        @model_validator(mode="after")
        def _check(self) -> "PredictRequest":
            if (self.text is None) == (self.texts is None):
                raise ValueError("give either 'text' (one string) or 'texts' (a list of strings), not both or neither")
            texts = self.all_texts()
            if not texts:
                raise ValueError("'texts' is empty: give at least one text")
            if len(texts) > serve.max_texts:
                raise ValueError(f"too many texts: {len(texts)} > {serve.max_texts} per request; split the batch")
            for i, text in enumerate(texts):
                where = "text" if self.text is not None else f"texts[{i}]"
                if not text.strip():
                    raise ValueError(f"{where} is empty: give some words to classify")
                if len(text) > serve.max_chars:
                    raise ValueError(f"{where} is too long: {len(text)} characters > {serve.max_chars}")
            return self

        def all_texts(self) -> list[str]:
            return [self.text] if self.text is not None else list(self.texts or [])

    class LabelScore(BaseModel):
        label: str = Field(description="the most probable label")
        score: float = Field(description="probability of that label")
        probabilities: dict[str, float] = Field(description="every label's calibrated probability")
        labels: list[str] = Field(description="every predicted label: [label] for a single-label model")

    class PredictResponse(BaseModel):
        model: str
        version: str
        backend: str
        predictions: list[LabelScore]

    store_holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        models = store or await asyncio.to_thread(ModelStore, cfg)
        store_holder["store"] = models
        await asyncio.to_thread(models.refresh)  # the first champion, loaded before the first request
        if models.champion is None:
            log.warning("serving without a model: %s", models.last_error)
        batcher = Batcher(serve.max_batch_texts)
        batcher.start()
        store_holder["batcher"] = batcher
        stop = threading.Event()
        refresher = None
        if start_refresh and serve.refresh_seconds > 0:

            def loop() -> None:
                while not stop.wait(serve.refresh_seconds):
                    models.refresh()

            refresher = threading.Thread(target=loop, name="emotion-refresh", daemon=True)
            refresher.start()
        try:
            yield
        finally:
            stop.set()
            batcher.stop()
            if refresher is not None:
                refresher.join(timeout=5)

    app = FastAPI(
        title="emotion-pipeline",
        version="1",
        summary="Emotion classification from the MLflow registry champion",
        description=f"Serves `models:/{cfg.mlflow.registered_model}@{serve.alias}`; picks up a new champion without "
        f"a restart. Limits: {serve.max_texts} texts per request, {serve.max_chars} characters per text.",
        lifespan=lifespan,
    )

    def models() -> ModelStore:
        return store_holder["store"]

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body:
            return JSONResponse(
                status_code=413,
                content={
                    "detail": f"request body too large: {length} bytes > {max_body} "
                    f"({serve.max_texts} texts of {serve.max_chars} characters at most)"
                },
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse(
            status_code=422,
            content={
                "detail": _readable(errors),
                "errors": [
                    {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")} for e in errors
                ],
            },
        )

    @app.exception_handler(ModelNotFound)
    async def not_found(request: Request, exc: ModelNotFound) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})

    @app.exception_handler(PipelineError)
    async def user_error(request: Request, exc: PipelineError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    demo_page = DEMO_PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def demo() -> HTMLResponse:
        return HTMLResponse(demo_page)

    @app.get("/health", summary="liveness and the served model")
    def health() -> JSONResponse:
        store_ = models()
        champion = store_.champion
        body = {
            "status": "ok" if champion else "no model",
            "model": store_.name,
            "version": champion.version if champion else None,
            "backend": champion.backend if champion else None,
            "last_check": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(store_.last_check)) if store_.last_check else None
            ),
            "last_error": store_.last_error,
        }
        return JSONResponse(status_code=200 if champion else 503, content=body)

    @app.get("/model", summary="the served model: version, labels, data hash, metrics, backend and parity check")
    async def model_info(
        version: str | None = Query(None, description="a registry version; default: the champion"),
    ) -> dict[str, Any]:
        loaded = await asyncio.to_thread(models().get, version)
        aliases = await asyncio.to_thread(models().aliases_of, loaded.version)
        return loaded.info(aliases)

    @app.get("/models", summary="registered versions, newest first, with aliases and metrics")
    def list_models() -> dict[str, Any]:
        store_ = models()
        champion = store_.champion
        return {"model": store_.name, "serving": champion.version if champion else None, "versions": store_.versions()}

    @app.post("/reload", summary="look for a new champion now (also done every refresh_seconds)")
    async def reload() -> dict[str, Any]:
        store_ = models()
        changed = await asyncio.to_thread(store_.refresh)
        champion = store_.champion
        return {"changed": changed, "version": champion.version if champion else None, "last_error": store_.last_error}

    @app.post(
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
    async def predict(request: PredictRequest) -> dict[str, Any]:
        version = None if request.version is None else str(request.version)
        store_ = models()
        loaded = store_.champion if version is None else None
        if loaded is None:
            loaded = await asyncio.to_thread(store_.get, version)
        predictions = await store_holder["batcher"].predict(loaded, request.all_texts())
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

    return app


def run(cfg: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    host = host or cfg.serve.host
    port = port or cfg.serve.port
    log.info(
        "serving %s@%s on http://%s:%d (demo page at /, API docs at /docs)",
        cfg.mlflow.registered_model,
        cfg.serve.alias,
        host,
        port,
    )
    try:
        uvicorn.run(create_app(cfg), host=host, port=port, access_log=cfg.serve.access_log, log_level="info")
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it captured
        pass
    log.info("stopped")
