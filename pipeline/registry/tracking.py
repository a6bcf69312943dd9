"""MLflow tracking and the model registry: runs, logged models, versions with lineage tags, aliases."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.ingest import describe_source
from pipeline.errors import PipelineError
from pipeline.ops.faults import fault_point
from pipeline.redact import redact

log = logging.getLogger(__name__)

HF_ARTIFACT = "hf_model"  # the artifact key serving/pyfunc.py loads the Hugging Face folder from
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
HISTORY_PREFIX = "promotion."  # registered-model tags promotion.<generation>.<token> hold the promotion history
GENERATION_TAG = "champion_generation"  # "<n>:<token>": the n-th champion move and the promoter that made it
LEASE_SUFFIX = ".promotion-lease"  # a helper registered model that exists while one promoter moves aliases
LEASE_SECONDS = 120.0  # a lease older than this is taken as abandoned (a crashed promoter); also the wait limit
MODEL_REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy", "pydantic", "pyyaml")


def client(cfg: Config) -> Any:
    """An MlflowClient on the configured store (creating the local sqlite folder if needed)."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    import mlflow
    from mlflow import MlflowClient

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    exported = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in exported}
    mlflow.set_tracking_uri(uri)  # for the fluent API (log_model); both calls also export environment variables,
    mlflow.set_registry_uri(uri)  # which would make later configs and child processes use this store silently
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if uri.startswith("sqlite:///") and uri not in _READY_SQLITE:
        mlflow_client = _set_up_sqlite(cfg, uri)
        _READY_SQLITE.add(uri)
        return mlflow_client
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_READY_SQLITE: set[str] = set()  # sqlite stores this process has seen set up


def _set_up_sqlite(cfg: Config, uri: str) -> Any:
    """The first client of a sqlite store in this process, created (the store migrates its schema when it is made)
    and used under a lock: two runs starting at once on a new project would both run MLflow's schema migrations on
    the same file, and one fails."""
    from mlflow import MlflowClient
    from pipeline.ops.lock import held

    db = Path(uri[len("sqlite:///") :])
    with held(db.with_name(db.name + ".setup.lock"), "MLflow store set-up", cfg.lock_timeout):
        mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_client.search_experiments(max_results=1)  # the tracking tables
        mlflow_client.search_registered_models(max_results=1)  # the registry's, in the same file
    return mlflow_client


def experiment_id(cfg: Config, mlflow_client: Any) -> str:
    """The configured experiment; local stores keep artifacts under ``mlflow.artifact_root``."""
    found = mlflow_client.get_experiment_by_name(cfg.mlflow.experiment)
    if found:
        return found.experiment_id
    location = None
    if cfg.tracking_uri.startswith("sqlite:"):
        location = cfg.path(cfg.mlflow.artifact_root).as_uri()
    return mlflow_client.create_experiment(cfg.mlflow.experiment, artifact_location=location)


def start_run(cfg: Config, mlflow_client: Any) -> str:
    """A new run in the configured experiment, tagged with its data source and model, with every setting as params."""
    tags = {"data_source": describe_source(cfg.data.source), "model_name": cfg.model.name}
    run = mlflow_client.create_run(experiment_id(cfg, mlflow_client), tags=redacted(tags))
    log_params(mlflow_client, run.info.run_id, cfg)
    return str(run.info.run_id)


def start_child_run(
    cfg: Config,
    mlflow_client: Any,
    parent_id: str,
    name: str,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A run nested under ``parent_id`` (the MLflow UI shows it beneath its parent): a CV fold or a teacher."""
    nested = {"mlflow.parentRunId": parent_id, "mlflow.runName": name, "model_name": cfg.model.name} | (tags or {})
    run = mlflow_client.create_run(experiment_id(cfg, mlflow_client), tags=nested)
    if params:
        log_param_values(mlflow_client, run.info.run_id, params)
    return str(run.info.run_id)


def redacted(tags: dict[str, str]) -> dict[str, str]:
    """Tags as they may be stored: a value such as ``data_source`` may be a URI with a password."""
    return {key: redact(str(value)) for key, value in tags.items()}


def set_tags(mlflow_client: Any, run_id: str, tags: dict[str, str]) -> None:
    for key, value in redacted(tags).items():
        mlflow_client.set_tag(run_id, key, value)


def end_run(mlflow_client: Any, run_id: str, status: str) -> None:
    """Close the run as FINISHED or FAILED."""
    mlflow_client.set_terminated(run_id, status)


def log_files(mlflow_client: Any, run_id: str, paths: list[Path], artifact_dir: str) -> None:
    """Log each file under ``artifact_dir`` of the run."""
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), artifact_dir)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_params(mlflow_client: Any, run_id: str, cfg: Config) -> None:
    log_param_values(mlflow_client, run_id, flatten(cfg.model_dump()))


def log_param_values(mlflow_client: Any, run_id: str, values: dict[str, Any]) -> None:
    """Flat parameters as MLflow keeps them: credentials in URIs hidden, strings cut to its 6000-character limit,
    in one call."""
    from mlflow.entities import Param

    mlflow_client.log_batch(run_id, params=[Param(k, redact(str(v))[:6000]) for k, v in values.items()])


def log_metrics(
    mlflow_client: Any, run_id: str, metrics: dict[str, float], step: int | None = None, prefix: str = ""
) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(prefix + k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
    mlflow_client.log_batch(run_id, metrics=batch)


ONNX_ARTIFACT = "onnx/model.onnx"  # the fp32 ONNX export beside the logged model, for the onnx-* serving backends
ONNX_STATIC_ARTIFACT = "onnx/model-int8-static.onnx"  # its calibrated int8 form, logged by the first server to build it


def log_model(run_id: str, model_dir: Path, labels: list[str], export_onnx: bool = False) -> tuple[str, str]:
    """Log the model folder as a pyfunc model on the run (and, with ``export_onnx``, its fp32 ONNX export as
    ``onnx/model.onnx``); returns its model URI and logged-model id."""
    import pandas as pd
    from mlflow.models import infer_signature

    import mlflow

    example_in = pd.DataFrame({"text": ["i feel wonderful today"]})
    example_out = pd.DataFrame(
        [{"label": labels[0], "labels": labels[0], "score": 1.0, **{f"prob_{label}": 0.0 for label in labels}}]
    )
    requirements = [f"{name}=={dist_version(name)}" for name in MODEL_REQUIREMENTS]
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(type hint|input example).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).parents[1] / "serving" / "pyfunc.py"),
            artifacts={HF_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(__file__).parents[1])],
            signature=infer_signature(example_in, example_out),
            pip_requirements=requirements,
        )
        if export_onnx:
            _log_onnx(model_dir)
    return info.model_uri, info.model_id


def _log_onnx(model_dir: Path) -> None:
    """Export the model to ONNX and log it on the active run (quantization is left to the server's load)."""
    import mlflow
    from pipeline.model.onnx_export import ONNX_FILE, export_onnx

    with tempfile.TemporaryDirectory(prefix="emotion-onnx-") as tmp:
        path = export_onnx(model_dir, Path(tmp) / ONNX_FILE)
        mlflow.log_artifact(str(path), artifact_path=str(Path(ONNX_ARTIFACT).parent))


def download_onnx(run_id: str | None, dst: Path) -> Path | None:
    """The run's logged ONNX export, downloaded into ``dst``; None when the run has none (then export at load)."""
    from mlflow.exceptions import MlflowException

    import mlflow

    if not run_id:
        return None
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ONNX_ARTIFACT, dst_path=str(dst))
    except (MlflowException, OSError):
        log.info("run %s has no %s: the ONNX backend will export the model at load", run_id, ONNX_ARTIFACT)
        return None
    with contextlib.suppress(MlflowException, OSError):  # the calibrated int8 file, once a server has built it
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ONNX_STATIC_ARTIFACT, dst_path=str(dst))
    return Path(local)


class RegistryUnavailable(PipelineError):
    """The registry could not answer (a locked sqlite file, a server down, a refused permission): the run stops
    before it registers or moves anything, instead of taking the error for 'nothing there'."""


def does_not_exist(exc: BaseException) -> bool:
    """Whether an MLflow error means the thing asked for is absent (the only error that reads as 'none').

    Stores answer a missing model with RESOURCE_DOES_NOT_EXIST, but a missing alias of an existing model with
    INVALID_PARAMETER_VALUE "Registered model alias ... not found".
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in exc.message and "not found" in exc.message


def unavailable(cfg: Config, doing: str, exc: BaseException) -> RegistryUnavailable:
    """The error that stops a run when the registry fails: which store, doing what, and the cause (redacted)."""
    cause = (str(exc).strip().splitlines() or [""])[0][:300]
    return RegistryUnavailable(
        f"the MLflow registry at {redact(cfg.tracking_uri)} failed to {doing}: {type(exc).__name__}: "
        f"{redact(cause)}. Nothing was registered or promoted; check that the store is reachable and not locked "
        "by another process, then run again"
    )


def registered_model(cfg: Config, mlflow_client: Any) -> Any | None:
    """The registered model, or None when it does not exist yet (any other registry error raises)."""
    name = cfg.mlflow.registered_model
    try:
        return mlflow_client.get_registered_model(name)
    except Exception as exc:
        if does_not_exist(exc):
            return None
        raise unavailable(cfg, f"read the registered model '{name}'", exc) from exc


def version_of_run(cfg: Config, mlflow_client: Any, run_id: str) -> str | None:
    """The version already registered from ``run_id`` (a retried registration finds it), or None.

    A version whose registration failed (FAILED_REGISTRATION) is deleted: it has no usable model, and keeping it
    would leave a run with two versions once the retry registers again.
    """
    name = cfg.mlflow.registered_model
    try:
        found = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception as exc:
        raise unavailable(cfg, f"search the versions of run {run_id}", exc) from exc
    usable = []
    for version in found:
        if version.status == "FAILED_REGISTRATION":
            log.warning("deleting %s version %s: its registration failed", name, version.version)
            mlflow_client.delete_model_version(name, version.version)
        else:
            usable.append(version)
    return str(min(int(v.version) for v in usable)) if usable else None


def log_static_int8(mlflow_client: Any, run_id: str, path: Path) -> None:
    """Keep a calibrated int8 file beside the run's ONNX export, so the next server load reuses it."""
    mlflow_client.log_artifact(run_id, str(path), artifact_path=str(Path(ONNX_STATIC_ARTIFACT).parent))


def register(
    cfg: Config, mlflow_client: Any, logged: tuple[str, str], run_id: str, tags: dict[str, str], description: str
) -> str:
    """Create a registered model version with its lineage tags in one call; returns the version.

    Idempotent per run: when the run already has a version (a task retried after creating it), that version is
    brought up to date and returned, so one run never has two versions.
    """
    name = cfg.mlflow.registered_model
    if registered_model(cfg, mlflow_client) is None:
        mlflow_client.create_registered_model(name, description="Emotion classifier fine-tuned by emotion-pipeline.")
    existing = version_of_run(cfg, mlflow_client, run_id)
    if existing is not None:
        update_version(cfg, mlflow_client, existing, tags, description)
        log.info("run %s already has %s version %s: kept it", run_id, name, existing)
        return existing
    model_uri, model_id = logged  # a tracking server needs the logged model's id with its URI
    version = mlflow_client.create_model_version(
        name, model_uri, run_id=run_id, tags=redacted(tags), description=redact(description), model_id=model_id
    )
    log.info("registered %s version %s", name, version.version)
    return str(version.version)


def update_version(cfg: Config, mlflow_client: Any, version: str, tags: dict[str, str], description: str) -> None:
    """Bring a registered version's tags and description (its model card) up to date."""
    name = cfg.mlflow.registered_model
    for key, value in redacted(tags).items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.update_model_version(name, version, redact(description))


def version_by_alias(cfg: Config, mlflow_client: Any, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when none does (or the model is not registered yet).

    Only 'does not exist' means none: any other registry error raises RegistryUnavailable, so a locked or
    unreachable store is never taken for a registry without a champion.
    """
    try:
        return mlflow_client.get_model_version_by_alias(cfg.mlflow.registered_model, alias)
    except Exception as exc:
        if does_not_exist(exc):
            return None
        raise unavailable(cfg, f"look up the alias '{alias}' of {cfg.mlflow.registered_model}", exc) from exc


def set_alias(cfg: Config, mlflow_client: Any, alias: str, version: str) -> None:
    mlflow_client.set_registered_model_alias(cfg.mlflow.registered_model, alias, version)
    log.info("alias %s -> %s version %s", alias, cfg.mlflow.registered_model, version)


class StaleChampion(PipelineError):
    """The champion changed between scoring it and promoting: the gate's comparison is out of date."""


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    kind: str  # gate | manual | rollback | recovered
    actor: str
    reason: str
    at: str


def _lock(cfg: Config) -> contextlib.AbstractContextManager[object]:
    """Local fast path: processes on this machine queue on a file lock before they ask the registry for its lease
    (the project lock's mechanism: a timeout names the holder; a crashed holder blocks nobody)."""
    from pipeline.ops.lock import held

    return held(cfg.path(cfg.mlflow.lock_file), "promotion", cfg.lock_timeout)


def _try_lease(cfg: Config, mlflow_client: Any, lease: str, token: str) -> bool:
    """Create the lease model (the database allows one of a name, so one client wins); clear it when expired, or
    at once when its holder is a process on this host that has exited (a promoter killed mid-promotion)."""
    from mlflow.exceptions import MlflowException

    from pipeline.ops.lock import Holder

    busy = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")  # held, or released while we looked
    me = Holder.this_process("promotion")
    try:
        expires = f"{time.time() + LEASE_SECONDS:.3f}"
        tags = {"token": token, "expires": expires, "host": me.host, "pid": str(me.pid)}
        mlflow_client.create_registered_model(lease, tags=tags)
        return True
    except MlflowException as exc:
        if exc.error_code not in busy:
            raise unavailable(cfg, f"take the promotion lease '{lease}'", exc) from exc
    try:
        held = mlflow_client.get_registered_model(lease)
        if float(held.tags.get("expires", "0")) < time.time() or _holder_gone(held.tags):
            log.warning("removing the abandoned promotion lease %s (%s)", lease, held.tags)
            mlflow_client.delete_registered_model(lease)
    except MlflowException as exc:
        if exc.error_code not in busy:
            raise unavailable(cfg, f"take the promotion lease '{lease}'", exc) from exc
    return False


def _holder_gone(tags: dict[str, str]) -> bool:
    """Whether a lease's holder is known to be dead: a process of this host that no longer exists."""
    from pipeline.ops.lock import Holder

    if "host" not in tags or not tags.get("pid", "").isdigit():
        return False  # a lease from another version of the pipeline: wait for it to expire
    return Holder(int(tags["pid"]), tags["host"], "", "", "promotion", "").is_gone()


@contextlib.contextmanager
def _registry_lease(cfg: Config, mlflow_client: Any, token: str) -> Iterator[None]:
    """Across machines sharing one tracking server: one promoter at a time holds ``<model>.promotion-lease``."""
    lease = cfg.mlflow.registered_model + LEASE_SUFFIX
    deadline = time.monotonic() + LEASE_SECONDS
    while not _try_lease(cfg, mlflow_client, lease, token):
        if time.monotonic() > deadline:
            raise PipelineError(
                f"another promotion has held the registered model '{lease}' for over {LEASE_SECONDS:.0f}s; "
                "if none is running, delete that registered model and promote again"
            )
        time.sleep(random.uniform(0.05, 0.3))
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # an expired lease may have been taken over: leave that one alone
            if mlflow_client.get_registered_model(lease).tags.get("token") == token:
                mlflow_client.delete_registered_model(lease)


def _champion(cfg: Config, mlflow_client: Any) -> str | None:
    current = version_by_alias(cfg, mlflow_client, CHAMPION)
    return str(current.version) if current else None


def history(cfg: Config, mlflow_client: Any) -> list[Promotion]:
    """Every promotion and rollback, oldest first."""
    return [Promotion(**json.loads(value)) for _, value in _history_tags(cfg, mlflow_client)]


def _history_tags(cfg: Config, mlflow_client: Any) -> list[tuple[str, str]]:
    model = registered_model(cfg, mlflow_client)
    if model is None:
        raise PipelineError(f"no registered model '{cfg.mlflow.registered_model}' yet: run `emotion run`")
    tags = model.tags
    return [(k, tags[k]) for k in sorted(tags) if k.startswith(HISTORY_PREFIX)]


def _generation(cfg: Config, mlflow_client: Any) -> str:
    """The ``champion_generation`` tag; a store from before the tag counts its history entries."""
    tags = mlflow_client.get_registered_model(cfg.mlflow.registered_model).tags
    return tags.get(GENERATION_TAG) or f"{len(_history_tags(cfg, mlflow_client))}:"


def _move_champion(cfg: Config, mlflow_client: Any, version: str, kind: str, actor: str, reason: str) -> Promotion:
    """champion -> version, the old champion -> previous, tags and history; the caller holds the lock and lease.

    Compare-and-set on the registry: this move claims the next ``champion_generation`` with a unique token and,
    after moving the aliases, checks that the claim and the champion are still its own. A lost race (possible only
    when a lease expired under a stalled promoter) removes this move's history entry and raises StaleChampion, so
    the caller gates again against the champion that won. History keys carry generation and token: never reused.
    """
    name = cfg.mlflow.registered_model
    number = int(_generation(cfg, mlflow_client).split(":")[0]) + 1
    token = uuid.uuid4().hex[:12]
    claim, key = f"{number}:{token}", f"{HISTORY_PREFIX}{number:06d}.{token}"
    previous = _champion(cfg, mlflow_client)
    _record_unrecorded_move(cfg, mlflow_client, previous)
    event = Promotion(version, previous, kind, actor, reason, datetime.now(UTC).isoformat(timespec="seconds"))
    mlflow_client.set_registered_model_tag(name, GENERATION_TAG, claim)
    if previous and previous != version:
        set_alias(cfg, mlflow_client, PREVIOUS, previous)
    set_alias(cfg, mlflow_client, CHAMPION, version)
    fault_point("promote.champion_moved")
    for tag, value in (
        ("promoted_at", event.at),
        ("promoted_by", actor),
        ("promotion_reason", reason[:4000]),
        ("promotion_kind", kind),
    ):
        mlflow_client.set_model_version_tag(name, version, tag, value)
    mlflow_client.set_registered_model_tag(name, key, json.dumps(asdict(event)))
    now, champion = _generation(cfg, mlflow_client), _champion(cfg, mlflow_client)
    if now != claim or champion != version:
        mlflow_client.delete_registered_model_tag(name, key)
        _restore_aliases(cfg, mlflow_client)
        raise StaleChampion(
            f"another promotion moved the champion while this one did (generation {claim} -> {now}, champion "
            f"{champion}): this promotion of version {version} is not recorded; see `emotion history`"
        )
    return event


def _record_unrecorded_move(cfg: Config, mlflow_client: Any, champion: str | None) -> None:
    """A promotion killed after it moved the champion and before it wrote history left a move nobody recorded: the
    champion differs from the last history entry. Write it down (kind ``recovered``) so history stays complete."""
    events = history(cfg, mlflow_client)
    recorded = events[-1].version if events else None
    if champion is None or champion == recorded:
        return
    tags = mlflow_client.get_model_version(cfg.mlflow.registered_model, champion).tags
    reason = (
        f"champion found on version {champion} while history ended at {recorded}: a promotion was interrupted "
        "after moving the alias; recorded by the next promotion"
    )
    event = Promotion(
        champion,
        recorded,
        "recovered",
        tags.get("promoted_by", "unknown"),
        reason,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    key = f"{HISTORY_PREFIX}{int(_generation(cfg, mlflow_client).split(':')[0]):06d}.recovered"
    mlflow_client.set_registered_model_tag(cfg.mlflow.registered_model, key, json.dumps(asdict(event)))
    log.warning("history: %s", reason)


def _restore_aliases(cfg: Config, mlflow_client: Any) -> None:
    """After a lost race: champion and previous as the last recorded promotion (the winner's) left them."""
    events = history(cfg, mlflow_client)
    if events:
        set_alias(cfg, mlflow_client, CHAMPION, events[-1].version)
        if events[-1].previous and events[-1].previous != events[-1].version:
            set_alias(cfg, mlflow_client, PREVIOUS, events[-1].previous)


def promote(
    cfg: Config,
    mlflow_client: Any,
    version: str,
    *,
    actor: str,
    reason: str,
    kind: str = "manual",
    expected_champion: str | bool | None = False,
    force: bool = False,
) -> Promotion:
    """Make ``version`` the champion; the only writer of the champion alias.

    ``expected_champion`` (when not False) is the champion the gate compared against: if another run moved
    the champion meanwhile, StaleChampion is raised and nothing changes. A version that failed its gate is
    refused unless ``force``.
    """
    name, reason = cfg.mlflow.registered_model, redact(reason)  # tags and history keep it: no URI passwords
    try:
        target = mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if not does_not_exist(exc):
            raise unavailable(cfg, f"read version {version} of {name}", exc) from exc
        raise PipelineError(f"{name} has no version {version}: see `emotion models`") from exc
    if target.tags.get("gate") == "failed" and not force:
        raise PipelineError(f"{name} version {version} failed its gate; use --force to promote it anyway")
    reason = _check_shadow(cfg, target, reason, force) if kind == "manual" else reason
    with _lock(cfg), _registry_lease(cfg, mlflow_client, uuid.uuid4().hex):
        current = _champion(cfg, mlflow_client)
        if expected_champion is not False and current != expected_champion:
            raise StaleChampion(f"the champion moved from {expected_champion} to {current} during this run")
        event = _move_champion(cfg, mlflow_client, version, kind, actor, reason)
    log.info(
        "promoted %s version %s to champion (previous: %s) by %s: %s", name, version, event.previous, actor, reason
    )
    return event


def _check_shadow(cfg: Config, target: Any, reason: str, force: bool) -> str:
    """Refuse a manual promotion without the shadow evidence ``gate.min_shadow_*`` asks for; with ``force``, the
    reason recorded says what was overridden."""
    from pipeline.registry.shadow_stats import promotion_problem

    problem = promotion_problem(cfg, target)
    if problem is None:
        return reason
    if not force:
        raise PipelineError(problem)
    log.warning("promoting anyway (--force): %s", problem)
    return f"{reason} [forced: {problem}]"


def rollback(cfg: Config, mlflow_client: Any, *, actor: str, reason: str) -> Promotion:
    """Give champion back to the version holding ``previous`` (the old champion becomes previous)."""
    reason = redact(reason)
    with _lock(cfg), _registry_lease(cfg, mlflow_client, uuid.uuid4().hex):
        target = version_by_alias(cfg, mlflow_client, PREVIOUS)
        if target is None:
            raise PipelineError("no previous champion to roll back to (no version has the alias 'previous')")
        event = _move_champion(cfg, mlflow_client, str(target.version), "rollback", actor, reason)
    log.info("rolled back %s to version %s (was %s)", cfg.mlflow.registered_model, event.version, event.previous)
    return event


def aliases_by_version(cfg: Config, mlflow_client: Any) -> dict[str, list[str]]:
    """Each version's aliases, sorted (versions without one are absent)."""
    name = cfg.mlflow.registered_model
    model = registered_model(cfg, mlflow_client)
    if model is None:
        raise PipelineError(f"no registered model '{name}' yet: run `emotion run`")
    aliases = model.aliases
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def list_versions(cfg: Config, mlflow_client: Any) -> list[dict[str, Any]]:
    """Versions, newest first, with aliases, gate result, metrics, data hash and creation time."""
    name = cfg.mlflow.registered_model
    by_version = aliases_by_version(cfg, mlflow_client)
    rows = []
    for v in mlflow_client.search_model_versions(f"name='{name}'"):
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        rows.append(
            {
                "version": str(v.version),
                "aliases": by_version.get(str(v.version), []),
                "created": created,
                "gate": v.tags.get("gate", ""),
                "accuracy": v.tags.get("accuracy", ""),
                "macro_f1": v.tags.get("macro_f1", ""),
                "data_hash": v.tags.get("data_hash", ""),
                "run_id": v.run_id,
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def download_model(model_uri: str, dst: Path | None = None) -> Path:
    """Download a registered or logged model and return its Hugging Face folder."""
    from mlflow.exceptions import MlflowException

    import mlflow
    from pipeline.model.predict import find_model_folder

    target = dst or Path(tempfile.mkdtemp(prefix="emotion-model-"))
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    except MlflowException as exc:
        raise PipelineError(
            f"cannot load {model_uri}: {str(exc).splitlines()[0]}. Train and promote a model with `emotion run`, "
            "or pass a model folder with --model"
        ) from exc
    return find_model_folder(Path(local))


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
