"""Checks on the folders the config names for writing, so no setting can point the pipeline at something it would
overwrite or mix up: the project itself, git or DVC internals, the MLflow store, the DVC remote, or another of its
own folders (``--set data.snapshot_dir=mlflow`` once replaced the whole model registry).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError

SQLITE_PREFIX = "sqlite:///"
LOCK_KEY = "mlflow.lock_file (its folder)"
# replaced or mirrored whole by DVC: nothing else may be in, be or contain them
EXCLUSIVE = ("data.snapshot_dir", "data.dvc_remote")
# (inner key, outer key): configured folders that may live inside another one without mixing their content
NESTING_ALLOWED = {("train.checkpoint_dir", "artifacts_dir"), ("monitor.merged_dir", "artifacts_dir")}


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _refuse(key: str, path: Path, why: str) -> PipelineError:
    setting = key.split(" ")[0]
    return PipelineError(f"{key} is {path}, {why}: set {setting} to a folder of its own (e.g. inside the project)")


def _check_reserved(key: str, path: Path, project: Path, store: Path | None) -> None:
    if _inside(project, path):
        raise _refuse(key, path, "the project folder or one that contains it")
    for internal in (".git", ".dvc"):
        if _inside(path, project / internal):
            raise _refuse(key, path, f"inside the project's {internal} folder")
    if store is None or not _inside(path, store) or _inside(project, store):
        return  # a store holding the whole project protects nothing more than the project check
    if key == LOCK_KEY or (key == "mlflow.artifact_root" and path != store):
        return
    raise _refuse(key, path, f"inside the MLflow store {store} (the registry lives there)")


def _mixes(key: str, other: str) -> bool:
    """Whether the two folders must be apart: the lock file's folder only has to keep out of the exclusive ones."""
    return LOCK_KEY not in (key, other) or key in EXCLUSIVE or other in EXCLUSIVE


def _check_apart(folders: dict[str, Path]) -> None:
    keys = list(folders)
    for i, key in enumerate(keys):
        for other in keys[i + 1 :]:
            if not _mixes(key, other):
                continue
            a, b = folders[key], folders[other]
            if a == b:
                raise _refuse(key, a, f"the same folder as {other}")
            if a.is_relative_to(b) and (key, other) not in NESTING_ALLOWED:
                raise _refuse(key, a, f"inside {other} ({b})")
            if b.is_relative_to(a) and (other, key) not in NESTING_ALLOWED:
                raise _refuse(other, b, f"inside {key} ({a})")


def sqlite_folder(uri: str) -> Path | None:
    """The folder holding an MLflow tracking database (sqlite) or file store, when the URI names a local one."""
    if uri.startswith(SQLITE_PREFIX):
        return Path(uri[len(SQLITE_PREFIX) - 1 :]).resolve().parent
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file:").removeprefix("//")).resolve()
    return None


def check_write_paths(folders: dict[str, Path], project: Path, store: Path | None) -> None:
    """Refuse (PipelineError naming the key) any configured write folder that is not a dedicated folder.

    ``folders``: each write folder by config key, resolved; ``store``: the local MLflow store's folder, if any.
    """
    for key, path in folders.items():
        _check_reserved(key, path, project, store)
    _check_apart(folders)
