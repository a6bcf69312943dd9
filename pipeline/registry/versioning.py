"""DVC bookkeeping: track the data snapshot, read its hash, and the code version for lineage."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DVC_LOGGERS = ("dvc", "dvc_objects", "dvc_data")


@contextlib.contextmanager
def dvc_output_to_log() -> Iterator[None]:
    """DVC prints hints ("git add data.dvc") to the console through its own handlers; while this runs, its records
    go up to the root logger (the run log) instead, and what it writes to stdout is logged."""
    loggers = [logging.getLogger(name) for name in DVC_LOGGERS]
    saved = [logger.handlers[:] for logger in loggers]
    for logger in loggers:
        logger.handlers.clear()
    written = io.StringIO()
    try:
        with contextlib.redirect_stdout(written):
            yield
    finally:
        for logger, handlers in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
        if written.getvalue().strip():
            log.info("dvc wrote:\n%s", written.getvalue().rstrip())


def dvc_track(project_dir: Path, target: Path) -> str:
    """``dvc add`` the target (writes ``<target>.dvc``) and return its DVC hash."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:  # DVC resolves a stage's working directory from the process cwd
        with dvc_output_to_log(), contextlib.chdir(project_dir), Repo(str(project_dir)) as repo:
            repo.add(str(target.relative_to(project_dir)))
    except NotDvcRepoError as exc:
        raise PipelineError(
            f"{project_dir} is not a DVC project: run `dvc init` there, or set data.dvc_track=false"
        ) from exc
    except DvcException as exc:
        raise PipelineError(f"dvc add {target} failed: {exc}") from exc
    data_hash = dvc_hash(target.with_name(target.name + ".dvc"))
    log.info("versioned %s with DVC: %s", target, data_hash)
    return data_hash


REMOTE_NAME = "storage"


def _is_url(remote: str) -> bool:
    return "://" in remote


def ensure_remote(project_dir: Path, remote: str) -> str:
    """Make ``remote`` the project's default DVC remote (a folder relative to the project, or a URL)."""
    from dvc.repo import Repo

    url, wanted = remote, remote
    if not _is_url(remote):
        folder = Path(remote) if Path(remote).is_absolute() else project_dir / remote
        folder.mkdir(parents=True, exist_ok=True)
        # DVC reads a relative path as relative to the cwd and stores it relative to .dvc/config
        url, wanted = os.path.relpath(folder, project_dir), str(folder.resolve())
    with contextlib.chdir(project_dir), Repo(str(project_dir)) as repo:
        current = repo.config["remote"].get(REMOTE_NAME, {}).get("url")  # absolute when it is a folder
        if current != wanted or repo.config["core"].get("remote") != REMOTE_NAME:
            with repo.config.edit() as conf:
                conf["remote"][REMOTE_NAME] = {"url": url}
                conf["core"]["remote"] = REMOTE_NAME
    return REMOTE_NAME


def dvc_push(project_dir: Path, pointer: Path, remote: str) -> None:
    """Push the data a pointer file tracks to the remote, so any machine can restore it."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    name = ensure_remote(project_dir, remote)
    try:
        with dvc_output_to_log(), contextlib.chdir(project_dir), Repo(str(project_dir)) as repo:
            pushed = repo.push(targets=[str(pointer.relative_to(project_dir))], remote=name)
    except DvcException as exc:
        raise PipelineError(f"dvc push to {remote} failed: {exc}") from exc
    log.info("pushed %s to DVC remote %s (%s files)", pointer.name, remote, pushed)


def dvc_restore(project_dir: Path, pointer: Path, data_hash: str) -> None:
    """Point ``pointer`` at ``data_hash`` and check that data out (from the cache, or pulled from the remote).

    DVC pulls what a pointer file names, so the new pointer is written first; when the pull fails or the data does
    not match, the old pointer is put back byte for byte (data.dvc then still names the data it did).
    """
    target = pointer.with_suffix("")
    old = pointer.read_bytes() if pointer.exists() else None
    pointer.write_text(yaml.safe_dump({"outs": [{"md5": data_hash, "hash": "md5", "path": target.name}]}))
    try:
        _pull(project_dir, pointer, data_hash)
    except BaseException:
        if old is None:
            pointer.unlink(missing_ok=True)
        else:
            pointer.write_bytes(old)
        raise
    log.info("restored %s to %s", target, data_hash)


def _pull(project_dir: Path, pointer: Path, data_hash: str) -> None:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with contextlib.chdir(project_dir), Repo(str(project_dir)) as repo:
            repo.pull(targets=[str(pointer.relative_to(project_dir))], force=True)
            changed = repo.status(targets=[str(pointer.relative_to(project_dir))])
    except DvcException as exc:
        raise PipelineError(f"cannot restore data {data_hash}: {exc}. Is the DVC remote reachable?") from exc
    if changed:
        raise PipelineError(f"restored {pointer.with_suffix('')} does not match {data_hash}: {changed}")


def dvc_hash(pointer: Path) -> str:
    """The md5 a ``.dvc`` pointer file records for its output."""
    outs = yaml.safe_load(pointer.read_text()).get("outs") or []
    if not outs:
        raise PipelineError(f"{pointer} records no outputs")
    return str(outs[0]["md5"])


def content_hash(path: Path) -> str:
    """md5 of a file's bytes, for snapshots not tracked by DVC."""
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def dvc_dir_hash(file: Path) -> str:
    """The hash ``dvc add`` gives a folder holding just this file (md5 of its JSON listing, with ``.dir``)."""
    md5 = hashlib.md5(file.read_bytes()).hexdigest()
    listing = json.dumps([{"md5": md5, "relpath": file.name}], sort_keys=True)
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def dvc_cached_file(project_dir: Path, dir_hash: str, relpath: str) -> Path | None:
    """Where the project's DVC cache holds file ``relpath`` of the folder ``dir_hash``, or None when it does not.

    Reads the cache directly (no checkout), so a past snapshot is found even after ``data.dvc`` moved on.
    """
    if not dir_hash.endswith(".dir") or not (project_dir / ".dvc").is_dir():
        return None
    try:
        from dvc.repo import Repo

        with Repo(str(project_dir)) as repo:
            cache = repo.cache.local
            listing_path = Path(cache.oid_to_path(dir_hash))
            if not listing_path.exists():
                return None
            entries = {e["relpath"]: e["md5"] for e in json.loads(listing_path.read_text())}
            if relpath not in entries:
                return None
            blob = Path(cache.oid_to_path(entries[relpath]))
    except Exception as exc:  # DVC raises many types for a broken or foreign cache; the caller tries another source
        log.warning("cannot read the DVC cache of %s: %s", project_dir, exc)
        return None
    return blob if blob.exists() else None


def git_commit(project_dir: Path) -> str:
    """The checked-out commit (with '-dirty' for uncommitted changes), or 'unknown' outside git."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project_dir, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
