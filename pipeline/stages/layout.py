"""Where a run reads and writes (``Layout``), and the locks that keep two runs in one project apart."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.ops import lock

RUNS_DIR = "runs"  # artifacts/runs/<run id>/: one folder per `emotion run`
LATEST = "latest"  # artifacts/latest -> runs/<run id> of the last finished run


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes, derived from the config.

    ``Layout.of``: the fixed ``artifacts/`` outputs of the DVC stages. ``Layout.for_run``: a run's own folder,
    so two runs in one project never read or overwrite each other's prepared data, checkpoints or model.
    """

    snapshot: Path
    reports: Path
    prepared: Path
    model: Path
    plots: Path
    root: Path
    checkpoints: Path

    @classmethod
    def of(cls, cfg: Config) -> Layout:
        root = cfg.artifacts
        return cls(
            cfg.path(cfg.data.snapshot_dir),
            root / "reports",
            root / "prepared",
            root / "model",
            root / "plots",
            root,
            cfg.path(cfg.train.checkpoint_dir),
        )

    @classmethod
    def for_run(cls, cfg: Config, run_id: str) -> Layout:
        root = cfg.artifacts / RUNS_DIR / run_id
        snapshot = cfg.path(cfg.data.snapshot_dir)  # only until the run's snapshot is committed
        return cls(
            snapshot, root / "reports", root / "prepared", root / "model", root / "plots", root, root / "checkpoints"
        )

    @property
    def ingest_report(self) -> Path:
        """What reading the source found (not in data/: the snapshot folder's DVC hash stays the data's own)."""
        return self.root / "ingest_report.json"


def project_lock(cfg: Config, purpose: str) -> contextlib.AbstractContextManager[object]:
    """The project's lock (``artifacts/locks/project.lock``) over what must be serial: the snapshot swap, latest."""
    return lock.held(cfg.artifacts / "locks" / "project.lock", purpose, cfg.lock_timeout)


def run_lock(layout: Layout) -> contextlib.AbstractContextManager[object]:
    """``<run folder>/run.lock``, held for the run's whole life: a ``--resume`` cannot enter a live run's folder."""
    return lock.held(layout.root / "run.lock", f"run {layout.root.name}", 0)


def publish_latest(cfg: Config, layout: Layout) -> Path:
    """Point ``artifacts/latest`` at a finished run's folder, atomically (a symlink renamed over the old one).

    Where symlinks are unavailable, ``latest`` is a small file holding the folder's path, replaced the same way.
    """
    latest = cfg.artifacts / LATEST
    tmp = latest.with_name(f".{LATEST}-{os.getpid()}")
    target = layout.root.relative_to(cfg.artifacts)
    with project_lock(cfg, "publish artifacts/latest"):
        if latest.is_dir() and not latest.is_symlink():
            raise PipelineError(f"{latest} is a folder, not the pointer to the last run: move it away and run again")
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(target, target_is_directory=True)
        except (OSError, NotImplementedError):
            tmp.write_text(f"{target}\n")
        os.replace(tmp, latest)
    return latest


def latest_run(cfg: Config) -> Path | None:
    """The folder of the last finished run (``artifacts/latest``), or None before the first one."""
    latest = cfg.artifacts / LATEST
    if latest.is_symlink():
        return latest.resolve()
    if latest.is_file():
        return cfg.artifacts / latest.read_text().strip()
    return None


def staging_dir(cfg: Config) -> Path:
    """Where this process stages a new snapshot beside ``data/`` until validation has passed."""
    target = Layout.of(cfg).snapshot
    return target.with_name(f"{target.name}.staging-{os.getpid()}")


def pointer_of(cfg: Config) -> Path:
    """The DVC pointer file of the snapshot folder (data.dvc)."""
    snapshot = Layout.of(cfg).snapshot
    return snapshot.with_name(snapshot.name + ".dvc")
