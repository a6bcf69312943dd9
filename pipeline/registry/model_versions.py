"""Registered model versions and their aliases (champion, challenger, previous): reading, creating, tagging."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.registry import connection, run_log

log = logging.getLogger(__name__)

CHAMPION = "champion"

CHALLENGER = "challenger"

PREVIOUS = "previous"


def registered_model(registry: RegistrySettings, mlflow_client: Any) -> Any | None:
    """The registered model, or None when it does not exist yet (any other registry error raises)."""
    name = registry.model_name
    try:
        return mlflow_client.get_registered_model(name)
    except Exception as exc:
        if connection.does_not_exist(exc):
            return None
        raise connection.unavailable(registry, f"read the registered model '{name}'", exc) from exc


def version_of_run(registry: RegistrySettings, mlflow_client: Any, run_id: str) -> str | None:
    """The version already registered from ``run_id`` (a retried registration finds it), or None.

    A version whose registration failed (FAILED_REGISTRATION) is deleted: it has no usable model, and keeping it
    would leave a run with two versions once the retry registers again.
    """
    name = registry.model_name
    try:
        found = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception as exc:
        raise connection.unavailable(registry, f"search the versions of run {run_id}", exc) from exc
    usable = []
    for version in found:
        if version.status == "FAILED_REGISTRATION":
            log.warning("deleting %s version %s: its registration failed", name, version.version)
            mlflow_client.delete_model_version(name, version.version)
        else:
            usable.append(version)
    return str(min(int(v.version) for v in usable)) if usable else None


def register(
    registry: RegistrySettings,
    mlflow_client: Any,
    logged: tuple[str, str],
    run_id: str,
    tags: dict[str, str],
    description: str,
) -> str:
    """Create a registered model version with its lineage tags in one call; returns the version.

    Idempotent per run: when the run already has a version (a task retried after creating it), that version is
    brought up to date and returned, so one run never has two versions.
    """
    name = registry.model_name
    if registered_model(registry, mlflow_client) is None:
        mlflow_client.create_registered_model(name, description="Emotion classifier fine-tuned by emotion-pipeline.")
    existing = version_of_run(registry, mlflow_client, run_id)
    if existing is not None:
        update_version(registry, mlflow_client, existing, tags, description)
        log.info("run %s already has %s version %s: kept it", run_id, name, existing)
        return existing
    model_uri, model_id = logged  # a tracking server needs the logged model's id with its URI
    version = mlflow_client.create_model_version(
        name, model_uri, run_id=run_id, tags=run_log.redacted(tags), description=redact(description), model_id=model_id
    )
    log.info("registered %s version %s", name, version.version)
    return str(version.version)


def update_version(
    registry: RegistrySettings, mlflow_client: Any, version: str, tags: dict[str, str], description: str
) -> None:
    """Bring a registered version's tags and description (its model card) up to date."""
    name = registry.model_name
    for key, value in run_log.redacted(tags).items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.update_model_version(name, version, redact(description))


def version_by_alias(registry: RegistrySettings, mlflow_client: Any, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when none does (or the model is not registered yet).

    Only 'does not exist' means none: any other registry error raises RegistryUnavailable, so a locked or
    unreachable store is never taken for a registry without a champion.
    """
    try:
        return mlflow_client.get_model_version_by_alias(registry.model_name, alias)
    except Exception as exc:
        if connection.does_not_exist(exc):
            return None
        raise connection.unavailable(registry, f"look up the alias '{alias}' of {registry.model_name}", exc) from exc


def set_alias(registry: RegistrySettings, mlflow_client: Any, alias: str, version: str) -> None:
    mlflow_client.set_registered_model_alias(registry.model_name, alias, version)
    log.info("alias %s -> %s version %s", alias, registry.model_name, version)


def aliases_by_version(registry: RegistrySettings, mlflow_client: Any) -> dict[str, list[str]]:
    """Each version's aliases, sorted (versions without one are absent)."""
    name = registry.model_name
    model = registered_model(registry, mlflow_client)
    if model is None:
        raise PipelineError(f"no registered model '{name}' yet: run `emotion run`")
    aliases = model.aliases
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def list_versions(registry: RegistrySettings, mlflow_client: Any) -> list[dict[str, Any]]:
    """Versions, newest first, with aliases, gate result, metrics, data hash and creation time."""
    name = registry.model_name
    by_version = aliases_by_version(registry, mlflow_client)
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
