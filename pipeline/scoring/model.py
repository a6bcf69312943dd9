"""Which model scores: the registry champion, a version, an alias, a models:/ URI or a model folder."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PipelineError

HEAD_BYTES = 1 << 20


@dataclass(frozen=True)
class ScoringModel:
    """A model to score with: ``name`` and ``version`` go into every output row and the resume manifest."""

    name: str
    version: str
    uri: str | None  # registry URI to download from; None for a local folder
    folder: Path | None  # the model folder, once local


def head_digest(path: Path, size: int = HEAD_BYTES) -> str:
    """SHA-256 of a file's first ``size`` bytes: cheap, and changes when a file is rewritten."""
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()


def _folder_version(folder: Path) -> str:
    """A local folder's version: a digest of its config and the size and first MB of its weights."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}:{head_digest(weights)}".encode())
    return "folder-" + digest.hexdigest()[:12]


def resolve_model(cfg: Config, spec: str | None) -> ScoringModel:
    """Turn ``--model`` into a name and a fixed version (an alias is looked up now, so a run is one version).

    ``None`` = the champion; ``3`` = that version; ``@challenger`` = that alias; ``models:/NAME/3`` or
    ``models:/NAME@alias``; anything else that exists on disk is a model folder.
    """
    name = cfg.mlflow.registered_model
    if spec and Path(spec).expanduser().exists():
        folder = Path(spec).expanduser().resolve()
        if not (folder / "config.json").exists():
            raise PipelineError(f"no trained model in {folder} (config.json missing): train one with `emotion run`")
        return ScoringModel(folder.name, _folder_version(folder), None, folder)
    if spec is None or spec.startswith("@"):
        return _by_alias(cfg, name, spec[1:] if spec else "champion")
    if spec.isdigit():
        return ScoringModel(name, spec, f"models:/{name}/{spec}", None)
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@(\w[\w-]*))", spec)
    if match:
        if match.group(2):
            return ScoringModel(match.group(1), match.group(2), spec, None)
        return _by_alias(cfg, match.group(1), match.group(3))
    raise PipelineError(
        f"--model {spec!r} is not a model folder, a version number, an @alias or a models:/NAME/VERSION URI"
    )


def _by_alias(cfg: Config, name: str, alias: str) -> ScoringModel:
    from mlflow.exceptions import MlflowException

    from pipeline.registry import connection

    client = connection.client(cfg.registry)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise PipelineError(
            f"'{name}' has no @{alias} in {cfg.tracking_uri}: train and promote a model with `emotion run`, "
            "or pass --model a version, an alias or a model folder"
        ) from exc
    return ScoringModel(name, str(version.version), f"models:/{name}/{version.version}", None)


def local_folder(cfg: Config, model: ScoringModel, dst: Path) -> ScoringModel:
    """The model with its folder on disk (downloaded into ``dst`` if it comes from the registry)."""
    if model.folder is not None:
        return model
    from pipeline.registry import connection, run_log

    connection.client(cfg.registry)
    assert model.uri is not None
    return ScoringModel(model.name, model.version, model.uri, run_log.download_model(model.uri, dst))
