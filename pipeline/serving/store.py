"""The served model versions (``ModelStore``): the registry champion, hot-reloaded, and a few others on demand.

Hot reload: a background thread (every ``serve.refresh_seconds``) and ``POST /reload`` look up the champion
alias; a new version is downloaded, loaded, parity-checked and warmed up completely before one reference swap
makes it current. A request takes the current model once and uses it to the end, so it never sees a
half-loaded model, and a failed load leaves the old model serving.

Each check also loads the versions of the aliases followed beside the champion (``serve.shadow``, and
``serve.canary_alias`` when ``serve.canary_fraction`` > 0), the same way; a follower that is the champion's
version is not used.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.model.onnx_export import STATIC_INT8_FILE
from pipeline.ops.faults import fault_point
from pipeline.redact import redact

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

QUANTIZATION_TAG = "serve.quantization"  # on a version served by an int8 backend: dynamic, static or refused


class ModelNotFound(PipelineError):
    """The requested model version does not exist (404), or no champion is loaded yet (503)."""

    def __init__(self, message: str, status_code: int = 404) -> None:
        super().__init__(message)
        self.status_code = status_code


class LoadThrottled(PipelineError):
    """Another version was loaded on demand less than ``serve.load_interval_seconds`` ago (429 + Retry-After)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def settle_heap() -> None:
    """Collect once, then keep what is alive out of the collector's full passes (``gc.freeze``). With the libraries
    and a model loaded, a full pass stalled a server process for about 100 ms at a time under load: p99 206-265 ms
    at 32 clients, 120 ms with the heap frozen (bench/README.md). Run after each champion swap too, so the model
    it replaced is collected first."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def sanitised(what: str, exc: BaseException) -> str:
    """An error for /health, /reload and other API answers: the exception type and a fixed sentence, never its
    text, which may hold paths or a tracking URI with credentials (the full error is in the server log).
    ModelNotFound messages are built this way, so they may be shown as they are."""
    return f"{what} ({type(exc).__name__}); see the server log"


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
            "quantization": self.classifier.quantization,
            "requested_backend": self.requested_backend,
            "parity": _redacted(self.parity.to_dict()) if self.parity is not None else None,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_seconds": round(self.load_seconds, 2),
        }


def _redacted(report: dict[str, Any]) -> dict[str, Any]:
    """A parity report for an API answer: its source and reason name the parity data, which may be a URI with
    credentials."""
    return {key: redact(value) if isinstance(value, str) else value for key, value in report.items()}


class ModelStore:
    """The served model versions: the champion (swapped atomically on reload) and a few others on demand."""

    def __init__(self, cfg: Config) -> None:
        from pipeline.registry import connection, model_spec

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in server logs
        import torch

        # inference threads; by default one core is left to the HTTP event loop, so that the two never fight
        # (on 2 cores a busy event loop makes 2 torch threads wait on each other at every operation)
        torch.set_num_threads(cfg.serve.threads or max(1, (os.cpu_count() or 2) - 1))
        self.cfg = cfg
        self.name = cfg.mlflow.registered_model
        self.client = connection.client(cfg.registry)
        self.registry = model_spec.Registry(self.name, lambda: self.client, cfg.tracking_uri)
        self.champion: LoadedModel | None = None  # replaced by one assignment, never mutated
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._others: OrderedDict[str, LoadedModel] = OrderedDict()
        self._followed: dict[str, LoadedModel] = {}  # shadow / canary alias -> its version; replaced, never mutated
        self.follow_failures = 0  # failed loads of a followed alias's version (the one loaded before keeps going)
        self._reload_lock = threading.Lock()  # one champion check at a time
        self._load_lock = threading.Lock()  # one model load at a time (memory, CPU)
        self._cache_lock = threading.Lock()  # guards _others
        self._last_on_demand_load = -float("inf")  # time.monotonic() of the last load asked for by a request
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
        except PipelineError as exc:  # the API shows only the sanitised sentence; the log has the error
            log.warning("no parity data, so %s cannot be checked and fp32 will be served: %s", serve.backend, exc)
            return None, sanitised("the parity data could not be read", exc)
        log.info("parity data: %d test texts of %r", len(data.texts), source)
        return data, None

    def _version(self, version: str) -> ModelVersion:
        """The registry's record of a version (tags, run id); ModelNotFound when there is none (404), or when the
        registry cannot be read (503, with a sanitised message)."""
        from pipeline.registry import connection, model_spec

        try:
            return model_spec.by_version(self.registry, self.name, version).record
        except connection.RegistryUnavailable as exc:
            log.exception("reading %s version %s from the registry failed", self.name, version)
            cause = exc.__cause__ or exc  # the store's own error (e.g. MlflowException), not the wrapper
            raise ModelNotFound(sanitised("the registry could not be read", cause), 503) from exc
        except PipelineError as exc:  # no such version, or not a version number
            raise ModelNotFound(f"{self.name} has no version {version}") from exc

    def _holder(self, alias: str) -> ModelVersion | None:
        """The registry's record of the version holding ``alias``, None when none does (a registry that cannot
        answer raises RegistryUnavailable: it is never taken for 'no such alias')."""
        from pipeline.registry import model_spec

        try:
            return model_spec.by_alias(self.registry, self.name, alias).record
        except model_spec.UnknownModel:
            return None

    def _load(self, version: str, meta: ModelVersion) -> LoadedModel:
        """Download, load, convert, parity-check and warm up one version (``meta``: its registry record);
        nothing shared is touched.

        Callers hold ``_load_lock`` (see ``_cached_or_load``).
        """
        from pipeline.registry import run_log
        from pipeline.serving.backends import build_classifier

        serve = self.cfg.serve
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f"emotion-serve-v{version}-"))
        try:
            folder = run_log.download_model(f"models:/{self.name}/{version}", tmp)
            onnx_file = run_log.download_onnx(meta.run_id, tmp) if serve.backend.startswith("onnx") else None
            had_static = onnx_file is not None and onnx_file.with_name(STATIC_INT8_FILE).exists()
            classifier, parity = build_classifier(
                folder,
                serve.backend,
                self._parity_data,
                serve.parity_tolerance,
                self.cfg.model.max_length,
                serve.batch_size,
                self._parity_error,
                onnx_file,
            )
            if onnx_file is not None:
                self._record_quantization(version, meta, classifier, onnx_file, had_static)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.perf_counter() - start
        log.info("loaded %s version %s (%s) in %.1fs", self.name, version, classifier.backend, seconds)
        return LoadedModel(
            self.name, version, classifier, serve.backend, parity, dict(meta.tags), meta.run_id, time.time(), seconds
        )

    def _record_quantization(
        self, version: str, meta: ModelVersion, classifier: Any, onnx_file: Path, had_static: bool
    ) -> None:
        """For the int8 ONNX backends: tag the version with the quantization served ("dynamic", "static", or
        "refused" when fp32 is served), and log a newly calibrated int8 file on the run so it is built once."""
        from pipeline.registry import run_log

        if "int8" not in self.cfg.serve.backend:
            return
        try:
            used = classifier.quantization or "refused"
            if meta.tags.get(QUANTIZATION_TAG) != used:
                self.client.set_model_version_tag(self.name, version, QUANTIZATION_TAG, used)
            static = onnx_file.with_name(STATIC_INT8_FILE)
            if used == "static" and not had_static and meta.run_id:
                run_log.log_static_int8(self.client, meta.run_id, static)
                log.info("logged the calibrated int8 model of version %s on run %s", version, meta.run_id)
        except Exception:  # the model is loaded and checked; failing to record that must not stop it serving
            log.exception("could not record the int8 quantization of version %s", version)

    def followed_aliases(self) -> list[str]:
        """The aliases loaded beside the champion: the shadow's, and the canary's when it gets traffic."""
        serve = self.cfg.serve
        aliases = [serve.shadow] if serve.shadow else []
        if serve.canary_fraction > 0 and serve.canary_alias not in aliases:
            aliases.append(serve.canary_alias)
        return [a for a in aliases if a != serve.alias]

    def follower(self, alias: str) -> LoadedModel | None:
        """The loaded version holding ``alias`` (as of the last refresh), None when it is the champion's or none."""
        model = self._followed.get(alias)
        champion = self.champion
        return None if model is None or (champion is not None and model.version == champion.version) else model

    def serving(self) -> list[tuple[str, str, LoadedModel]]:
        """(role, alias, model) of every model that answers or shadows traffic, for /metrics."""
        serve = self.cfg.serve
        rows = [("champion", serve.alias, self.champion)] if self.champion else []
        for role, alias, wanted in (
            ("shadow", serve.shadow, serve.shadow is not None),
            ("canary", serve.canary_alias, serve.canary_fraction > 0),
        ):
            model = self.follower(alias) if wanted and alias else None
            if model is not None:
                rows.append((role, str(alias), model))
        return rows

    def refresh(self) -> bool:
        """Serve the alias's current version (and load the followed aliases'); True if a new champion was swapped in."""
        with self._reload_lock:
            self.last_check = time.time()
            changed = self._refresh_champion()
            for alias in self.followed_aliases():
                self._refresh_follower(alias)
        if changed:
            settle_heap()  # the replaced model's cycles collected, the new one frozen
        return changed

    def _refresh_follower(self, alias: str) -> None:
        """Load the version now holding ``alias``; on failure keep the one loaded before (and log why)."""
        try:
            meta = self._holder(alias)
            current = self._followed.get(alias)
            if meta is None:
                self._followed = {k: v for k, v in self._followed.items() if k != alias}
            elif current is None or current.version != str(meta.version):
                loaded = self.get(str(meta.version))  # the champion itself, or a cached or freshly loaded version
                self._followed = self._followed | {alias: loaded}
                log.info("%s alias %s -> version %s", self.name, alias, loaded.version)
        except Exception:
            self.follow_failures += 1
            log.exception("could not load the version holding alias %s", alias)

    def _refresh_champion(self) -> bool:
        """Swap in the serving alias's current version; False when unchanged, missing or failing (see last_error)."""
        try:
            meta = self._holder(self.cfg.serve.alias)
            if meta is None:
                self.last_error = f"no version of {self.name} has the alias '{self.cfg.serve.alias}' yet"
                return False
            version = str(meta.version)
            current = self.champion
            if current is not None and current.version == version:
                self.last_error = None
                return False
            loaded = self._cached_or_load(version, meta)  # the alias lookup's record: no second read
            if current is not None:
                fault_point("serve.reload_loaded")
            self.champion = loaded  # the swap: one reference assignment
            with self._cache_lock:
                self._others.pop(version, None)
            if current is not None:
                self._remember(current)
            self.last_error = None
            log.info("now serving %s version %s (was %s)", self.name, version, current.version if current else "none")
            return True
        except Exception as exc:  # keep serving the old model; say why in /health
            self.last_error = (
                f"reload failed: {exc}" if isinstance(exc, ModelNotFound) else sanitised("reload failed", exc)
            )
            log.exception("reload failed; still serving %s", self.champion.version if self.champion else "nothing")
            return False

    def _cached_or_load(self, version: str, meta: ModelVersion | None = None) -> LoadedModel:
        """A loaded version from the cache, else loaded now (``meta``: its registry record, when already read)."""
        with self._load_lock:
            with self._cache_lock:
                found = self._others.get(version)
            if found is not None:
                return found
            meta = meta or self._version(version)
            try:
                return self._load(version, meta)
            except Exception as exc:  # the download or load failed: say so without its text (paths, URIs)
                log.exception("loading %s version %s failed", self.name, version)
                raise ModelNotFound(sanitised(f"loading version {version} failed", exc), 503) from exc

    def _remember(self, model: LoadedModel) -> None:
        with self._cache_lock:
            if self.cfg.serve.max_loaded_versions <= 0:
                return
            self._others[model.version] = model
            self._others.move_to_end(model.version)
            while len(self._others) > self.cfg.serve.max_loaded_versions:
                self._others.popitem(last=False)

    def get(self, version: str | None = None, *, throttle: bool = False) -> LoadedModel:
        """The champion (``version`` None) or a given version, loaded on first use; with ``throttle`` (a request
        asked for it) a load is refused with LoadThrottled within ``serve.load_interval_seconds`` of the last one."""
        champion = self.champion
        if version is None or (champion is not None and champion.version == version):
            if champion is None:
                raise ModelNotFound(self.last_error or f"no {self.cfg.serve.alias} model loaded yet", 503)
            return champion
        if throttle:
            self._check_load_rate(version)
        found = self._cached_or_load(version)
        if found is not self.champion:
            self._remember(found)
        return found

    def _check_load_rate(self, version: str) -> None:
        """Refuse a load of a version not loaded yet too soon after the last such load: each costs a download and
        the model's memory, so a client cycling through versions must not be able to keep the server loading."""
        with self._cache_lock:
            if version in self._others:
                return
        self._version(version)  # an unknown version is a 404, not a reason to wait
        with self._cache_lock:
            now = time.monotonic()
            wait = self._last_on_demand_load + self.cfg.serve.load_interval_seconds - now
            if wait > 0:
                raise LoadThrottled(
                    f"another model version was loaded moments ago; version {version} can be loaded in {wait:.0f}s",
                    wait,
                )
            self._last_on_demand_load = now

    def versions(self) -> list[dict[str, Any]]:
        from pipeline.registry import model_versions

        try:
            rows = model_versions.list_versions(self.cfg.registry, self.client)
        except PipelineError:
            return []
        with self._cache_lock:
            loaded = set(self._others) | ({self.champion.version} if self.champion else set())
        return [row | {"loaded": row["version"] in loaded} for row in rows]

    def aliases_of(self, version: str) -> list[str]:
        """The version's aliases; none when the registry cannot be read (the model's info is served anyway)."""
        from pipeline.registry import model_versions

        try:
            return model_versions.aliases_by_version(self.cfg.registry, self.client).get(str(version), [])
        except Exception:  # PipelineError, or an unreachable tracking server
            return []
