"""DVC bookkeeping: track the data snapshot, read its hash, and the code version for lineage."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
from pathlib import Path

import yaml

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def dvc_track(project_dir: Path, target: Path) -> str:
    """``dvc add`` the target (writes ``<target>.dvc``) and return its DVC hash."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:  # DVC resolves a stage's working directory from the process cwd
        with contextlib.chdir(project_dir), Repo(str(project_dir)) as repo:
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


def dvc_hash(pointer: Path) -> str:
    """The md5 a ``.dvc`` pointer file records for its output."""
    outs = yaml.safe_load(pointer.read_text()).get("outs") or []
    if not outs:
        raise PipelineError(f"{pointer} records no outputs")
    return str(outs[0]["md5"])


def content_hash(path: Path) -> str:
    """md5 of a file's bytes, for snapshots not tracked by DVC."""
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def git_commit(project_dir: Path) -> str:
    """The checked-out commit (with '-dirty' for uncommitted changes), or 'unknown' outside git."""
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
