"""One reading of a model spec, for every command and service that picks a model: predict, score, serve, monitor.

A spec is ``@alias`` (``@champion``), a version number (``3``), ``models:/NAME/3``, ``models:/NAME@alias`` or a
local model folder; ``None`` is the champion. An alias is looked up once, so a run that started on one version
stays on it. Each mistake gets its own error: an unknown alias, a version that does not exist, a version that is
not a number, a folder that is missing or holds no model. A registry that cannot answer raises
``connection.RegistryUnavailable``, never one of these.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.registry import connection, model_versions, run_log

HEAD_BYTES = 1 << 20
REGISTRY_FORMS = "a version number, an @alias, a models:/NAME/VERSION or models:/NAME@alias URI"
FORMS = f"{REGISTRY_FORMS}, or a model folder"
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))")


class UnknownModel(PipelineError):
    """The spec names nothing: an alias no version holds, a version that does not exist, a missing folder."""


@dataclass(frozen=True)
class ModelRef:
    """A model pinned to one version: ``uri`` (``models:/NAME/VERSION``) to download it from the registry, or the
    local ``folder`` it already is in; ``record`` is the registry's ModelVersion (tags, run id), None for a folder."""

    name: str
    version: str
    uri: str | None
    folder: Path | None
    record: Any = None


@dataclass(frozen=True)
class Registry:
    """Where registry specs are looked up: the registered model a bare version or alias belongs to, a way to get an
    MlflowClient (called only for registry specs, so a folder needs no store), and the store's name for messages."""

    model: str
    client: Callable[[], Any]
    store: str

    @classmethod
    def of(cls, settings: RegistrySettings) -> Registry:
        """The configured store and registered model (the client is made on first use)."""
        return cls(settings.model_name, lambda: connection.client(settings), settings.tracking_uri)

    def failure(self, doing: str, exc: BaseException) -> connection.RegistryUnavailable:
        cause = (str(exc).strip().splitlines() or [""])[0][:300]
        return connection.RegistryUnavailable(
            f"the MLflow registry at {redact(self.store)} failed to {doing}: {type(exc).__name__}: {redact(cause)}. "
            "Check that the store is reachable and not locked by another process, then try again"
        )


def resolve(spec: str | None, registry: Registry) -> ModelRef:
    """The model ``spec`` names (see the module docstring); ``None`` is the champion."""
    if spec is None:
        return by_alias(registry, registry.model, model_versions.CHAMPION)
    spec = spec.strip()
    if not spec:
        raise PipelineError(f"--model is empty: give {FORMS}")
    if names_folder(spec):
        return from_folder(Path(spec))
    if spec.startswith("@"):
        return by_alias(registry, registry.model, spec[1:])
    if spec.startswith("models:"):
        match = _URI.fullmatch(spec)
        if match is None:
            raise PipelineError(f"--model {spec!r} is not a model folder, {REGISTRY_FORMS}")
        if match["alias"]:
            return by_alias(registry, match["name"], match["alias"])
        return by_version(registry, match["name"], match["version"])
    if re.fullmatch(r"[vV]?[+-]?[\d.]+", spec):  # meant as a version: 3 is one, v3, -1 or 3.0 are not
        return by_version(registry, registry.model, spec)
    if "://" in spec or re.match(r"^\w+:/", spec):
        raise PipelineError(f"--model {spec!r} is not a model folder, {REGISTRY_FORMS}")
    raise UnknownModel(f"no model folder {spec} (and it is not {REGISTRY_FORMS})")


def names_folder(spec: str | None) -> bool:
    """Whether ``spec`` is a local path (``resolve`` reads it as a model folder, with no store asked)."""
    return spec is not None and bool(spec.strip()) and Path(spec.strip()).expanduser().exists()


def from_folder(folder: Path) -> ModelRef:
    """A local model folder; its version is a digest of its config and weights, so a changed model is a new one."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise UnknownModel(f"no model folder {folder}: give a folder holding a trained model (config.json)")
    if not (folder / "config.json").exists():
        raise UnknownModel(f"no trained model in {folder} (config.json missing): train one with `emotion run`")
    return ModelRef(folder.name, folder_version(folder), None, folder)


MAX_VERSION = 2**31 - 1  # the registry's version column is a 32-bit integer in PostgreSQL


def version_number(text: str) -> str:
    """``text`` as a canonical version number (``007`` -> ``7``), or a PipelineError that says it is none: the
    store is never asked about a version it cannot hold, so its answer cannot be mistaken for a store failure."""
    if not text.isascii() or not text.strip().isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise PipelineError(f"{text!r} is not a version number: versions are 1, 2, 3 ... (see `emotion models`)")
    return str(int(text))


def _lookup(registry: Registry, read: Callable[[Any], Any], doing: str, missing: str) -> Any:
    """One registry read: 'does not exist' is UnknownModel(``missing``), any other failure RegistryUnavailable."""
    try:
        return read(registry.client())
    except Exception as exc:
        if connection.does_not_exist(exc):
            raise UnknownModel(missing) from exc
        raise registry.failure(doing, exc) from exc


def by_version(registry: Registry, name: str, version: str) -> ModelRef:
    """``name``'s ``version``, checked to exist now (not at download time)."""
    version = version_number(version)
    record = _lookup(
        registry,
        lambda client: client.get_model_version(name, version),
        f"read version {version} of '{name}'",
        f"version {version} of '{name}' does not exist in {redact(registry.store)}: see `emotion models`",
    )
    return ModelRef(name, version, f"models:/{name}/{version}", None, record)


def by_alias(registry: Registry, name: str, alias: str) -> ModelRef:
    """The version holding ``alias`` now, pinned: a later move of the alias does not change this reference."""
    if not re.fullmatch(r"\w[\w-]*", alias):
        raise PipelineError(f"'@{alias}' is not an alias: aliases are letters, digits, '_' and '-' (e.g. @champion)")
    record = _lookup(
        registry,
        lambda client: client.get_model_version_by_alias(name, alias),
        f"look up the alias '{alias}' of '{name}'",
        f"'{name}' has no @{alias} in {redact(registry.store)}: train and promote a model with `emotion run`, "
        f"or give {FORMS}",
    )
    version = str(record.version)
    return ModelRef(name, version, f"models:/{name}/{version}", None, record)


def download(ref: ModelRef, dst: Path | None = None) -> ModelRef:
    """``ref`` with its model folder on disk: downloaded into ``dst`` (a new temporary folder if None) when it
    comes from the registry, as it is when it is a folder."""
    if ref.folder is not None:
        return ref
    assert ref.uri is not None
    return ModelRef(ref.name, ref.version, ref.uri, run_log.download_model(ref.uri, dst), ref.record)


def folder_version(folder: Path) -> str:
    """A local folder's version: a digest of its config and the size and first MB of its weights."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}:{head_digest(weights)}".encode())
    return "folder-" + digest.hexdigest()[:12]


def head_digest(path: Path, size: int = HEAD_BYTES) -> str:
    """SHA-256 of a file's first ``size`` bytes: cheap, and changes when a file is rewritten."""
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()
