"""The MLflow store: a client on it, and the errors that tell a failing store from a missing thing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.redact import redact


def client(registry: RegistrySettings) -> Any:
    """An MlflowClient on the configured store (creating the local sqlite folder if needed)."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    import mlflow
    from mlflow import MlflowClient

    uri = registry.tracking_uri
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
        mlflow_client = _set_up_sqlite(registry, uri)
        _READY_SQLITE.add(uri)
        return mlflow_client
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_READY_SQLITE: set[str] = set()  # sqlite stores this process has seen set up


def _set_up_sqlite(registry: RegistrySettings, uri: str) -> Any:
    """The first client of a sqlite store in this process, created (the store migrates its schema when it is made)
    and used under a lock: two runs starting at once on a new project would both run MLflow's schema migrations on
    the same file, and one fails."""
    from mlflow import MlflowClient
    from pipeline.ops.lock import held

    db = Path(uri[len("sqlite:///") :])
    with held(db.with_name(db.name + ".setup.lock"), "MLflow store set-up", registry.lock_timeout):
        mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_client.search_experiments(max_results=1)  # the tracking tables
        mlflow_client.search_registered_models(max_results=1)  # the registry's, in the same file
    return mlflow_client


def experiment_id(registry: RegistrySettings, mlflow_client: Any) -> str:
    """The configured experiment; local stores keep artifacts under ``mlflow.artifact_root``."""
    found = mlflow_client.get_experiment_by_name(registry.experiment)
    if found:
        return found.experiment_id
    location = None
    if registry.tracking_uri.startswith("sqlite:"):
        location = registry.artifact_root.as_uri()
    return mlflow_client.create_experiment(registry.experiment, artifact_location=location)


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


def unavailable(registry: RegistrySettings, doing: str, exc: BaseException) -> RegistryUnavailable:
    """The error that stops a run when the registry fails: which store, doing what, and the cause (redacted)."""
    cause = (str(exc).strip().splitlines() or [""])[0][:300]
    return RegistryUnavailable(
        f"the MLflow registry at {redact(registry.tracking_uri)} failed to {doing}: {type(exc).__name__}: "
        f"{redact(cause)}. Nothing was registered or promoted; check that the store is reachable and not locked "
        "by another process, then run again"
    )
