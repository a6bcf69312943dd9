"""Checks on the folders the config names for writing, so no setting can point the pipeline at something it would
overwrite or mix up: the project itself, git or DVC internals, the MLflow store, the DVC remote, or another of its
own folders (``--set data.snapshot_dir=mlflow`` once replaced the whole model registry).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import PipelineError

SQLITE_PREFIX = "sqlite:///"
LOCK_KEY = "mlflow.lock_file (its folder)"
# replaced or mirrored whole by DVC: nothing else may be in, be or contain them
EXCLUSIVE = ("data.snapshot_dir", "data.dvc_remote")
# (inner key, outer key): configured folders that may live inside another one without mixing their content
NESTING_ALLOWED = {("train.checkpoint_dir", "artifacts_dir"), ("monitor.merged_dir", "artifacts_dir")}


PROJECT_FILES = ("params.yaml", "dvc.yaml", "dvc.lock")  # what DVC and every driver read the project from


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
    if project.parent == project:
        raise PipelineError(
            f"project_dir is {project}, a filesystem root: set project_dir to the project's own folder (the clone)"
        )
    if project.exists() and not project.is_dir():
        raise PipelineError(f"project_dir is {project}, a file: set project_dir to the project's folder")
    for key, path in folders.items():
        _check_reserved(key, path, project, store)
    _check_apart(folders)


def check_project(project: Path, dvc_track: bool) -> None:
    """Before a command creates anything in the project (run logs, the MLflow store, locks, snapshots): it must be
    an existing folder, and a DVC project when the snapshot is versioned (``data.dvc_track``)."""
    if not project.is_dir():
        raise PipelineError(f"project_dir {project} is not a folder: create it (git init; dvc init) or fix project_dir")
    if dvc_track and not any((folder / ".dvc").is_dir() for folder in (project, *project.parents)):
        raise PipelineError(
            f"project_dir {project} is not a DVC project: run `dvc init` there, or set data.dvc_track=false"
        )


def managed_folders(folders: dict[str, Path], project: Path, store: Path | None) -> dict[str, Path]:
    """The folders no command may write a user-named file into, by what they are: the snapshot, the DVC remote,
    the MLflow store and its artifacts, the runs' folders, git and DVC internals.

    ``folders``: the config's write folders (``Config.write_folders``); ``store``: the local MLflow store's folder.
    """
    managed = {".git": project / ".git", ".dvc": project / ".dvc"}
    managed |= {f"the project's {name}": project / name for name in PROJECT_FILES}
    for key in ("data.snapshot_dir", "data.dvc_remote", "mlflow.artifact_root", "train.checkpoint_dir"):
        if key in folders:
            managed[key] = folders[key]
    if "data.snapshot_dir" in folders:  # its DVC pointer, data.dvc
        snapshot = folders["data.snapshot_dir"]
        managed["data.snapshot_dir's DVC pointer"] = snapshot.with_name(snapshot.name + ".dvc")
    if "artifacts_dir" in folders:
        managed["artifacts_dir (its runs/)"] = folders["artifacts_dir"] / "runs"
    if store is not None and not _inside(project, store):  # a store holding the project protects nothing apart
        managed["the MLflow store"] = store
    return {key: path.resolve() for key, path in managed.items()}


def _same_file(a: Path, b: Path) -> bool:
    """The same file by path after resolving symlinks, or by inode (a hard link)."""
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_output(
    path: Path,
    *,
    flag: str,
    inputs: Iterable[Path] = (),
    managed: dict[str, Path] | None = None,
    overwrite: bool = False,
) -> Path:
    """Refuse (PipelineError naming ``flag``) to write ``path`` over one of the command's ``inputs``, inside a
    ``managed`` folder, onto a folder, or over an existing file without ``overwrite``; returns it resolved.

    Called before the command does any work, so a refusal costs nothing and changes nothing."""
    target = path.expanduser().resolve()
    for source in inputs:
        if _same_file(target, source.expanduser().resolve()):
            raise PipelineError(f"{flag} {path} is one of the command's inputs ({source}): write to another file")
    for key, folder in (managed or {}).items():
        if _inside(target, folder):
            raise PipelineError(
                f"{flag} {path} is inside {key} ({folder}), which the pipeline manages: write somewhere else"
            )
    try:
        is_folder, exists = target.is_dir(), target.exists()
    except OSError as exc:  # a name too long for the file system, a parent that is a file, ...
        raise PipelineError(f"{flag} {path} cannot be a file here: {exc.strerror}") from exc
    if is_folder:
        raise PipelineError(f"{flag} {path} is a folder: name a file")
    ancestor = next(folder for folder in target.parents if folder.exists())
    if not ancestor.is_dir():
        raise PipelineError(f"{flag} {path} cannot be a file here: {ancestor} is a file, not a folder")
    if exists and not overwrite:
        raise PipelineError(f"{flag} {path} exists: add --overwrite to replace it, or write to another file")
    return target
