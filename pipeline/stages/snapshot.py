"""The snapshot transaction: a new dataset is read into a staging folder, validated there, and only then swapped
into ``data/`` and versioned; a refused one is discarded and leaves ``data/``, ``data.dvc`` and the remote as they
were (``with staged_snapshot(...)``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline import console
from pipeline.config import Config
from pipeline.data import ingest, validate
from pipeline.errors import PipelineError
from pipeline.ops.faults import fault_point
from pipeline.registry import versioning
from pipeline.stages.layout import Layout, pointer_of, project_lock, staging_dir
from pipeline.stages.steps import validate_stage


@dataclasses.dataclass
class Staging:
    """The snapshot of a ``staged_snapshot`` block: staged inside it, the committed one (in data/) after it."""

    snapshot: ingest.Snapshot
    data_hash: str  # the hash it will have (inside the block), the hash DVC stored (after it)


@contextlib.contextmanager
def staged_snapshot(cfg: Config, layout: Layout | None = None) -> Iterator[Staging]:
    """Stage the source; validate inside the block; on leaving it, swap the snapshot in (commit), or discard it when
    the block raised. Downstream work uses ``staging.snapshot`` after the block, never data/ again."""
    staged, data_hash = ingest_stage(cfg, layout)
    staging = Staging(staged, data_hash)
    try:
        yield staging
    except BaseException:
        discard_snapshot(staged)  # a refused dataset never reaches data/, data.dvc or the remote
        raise
    staging.snapshot, staging.data_hash = commit_snapshot(cfg, staged, layout)


def ingest_stage(cfg: Config, layout: Layout | None = None) -> tuple[ingest.Snapshot, str]:
    """Snapshot the source into a staging folder beside ``data/``; returns it and the hash it will have.

    Nothing the project tracks changes yet: ``commit_snapshot`` swaps it in once validation passed, and
    ``discard_snapshot`` removes it when validation refused it.
    """
    started = time.perf_counter()
    project = Path(cfg.project_dir).resolve()
    staged = ingest.ingest(cfg.data, staging_dir(cfg), project)
    ingest.write_report(
        staged, (layout or Layout.of(cfg)).ingest_report
    )  # bound to the snapshot bytes, so valid after the swap
    data_hash = versioning.dvc_dir_hash(staged.path) if cfg.data.dvc_track else versioning.content_hash(staged.path)
    counts = staged.split_counts()
    rows = ", ".join(f"{split} {n}" for split, n in counts.items())
    console.stage(
        "ingest",
        f"{sum(counts.values())} rows ({rows}) from {cfg.data.source}, hash {data_hash}",
        console.since(started),
    )
    return staged, data_hash


def discard_snapshot(staged: ingest.Snapshot) -> None:
    """Remove a staged snapshot that will not be committed (validation refused it)."""
    shutil.rmtree(staged.path.parent, ignore_errors=True)


def commit_snapshot(cfg: Config, staged: ingest.Snapshot, layout: Layout | None = None) -> tuple[ingest.Snapshot, str]:
    """Swap a validated staged snapshot into ``data/`` and version it (``dvc add``, push); returns it and its hash.

    Under the project lock: two runs never swap or ``dvc add`` at once. A run works on from the returned snapshot's
    frame, never from data/ again (the next run may swap it). The fixed ``artifacts/ingest_report.json`` follows
    data/, for the DVC stages.
    """
    with project_lock(cfg, "snapshot swap"):
        snapshot, data_hash = _swap_snapshot(cfg, staged)
        report, fixed = (layout or Layout.of(cfg)).ingest_report, Layout.of(cfg).ingest_report
        if report != fixed and report.exists():
            shutil.copyfile(report, fixed)
    return snapshot, data_hash


def _swap_snapshot(cfg: Config, staged: ingest.Snapshot) -> tuple[ingest.Snapshot, str]:
    """The old folder is kept aside until DVC succeeded, so a failed add or push leaves data/ and data.dvc as
    they were."""
    project = Path(cfg.project_dir).resolve()
    target, pointer = Layout.of(cfg).snapshot, pointer_of(cfg)
    ingest.check_replaceable(target)
    backup = target.with_name(f"{target.name}.backup-{os.getpid()}")
    old_pointer = pointer.read_bytes() if pointer.exists() else None
    if target.exists():
        target.rename(backup)
    staged.path.parent.rename(target)
    snapshot = dataclasses.replace(staged, path=target / ingest.SNAPSHOT_NAME)
    try:
        data_hash = _version(cfg, project, snapshot.path)
    except BaseException:
        shutil.rmtree(target)
        if backup.exists():
            backup.rename(target)
        if old_pointer is None:
            pointer.unlink(missing_ok=True)
        else:
            pointer.write_bytes(old_pointer)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    fault_point("ingest.committed")
    return snapshot, data_hash


def _version(cfg: Config, project: Path, snapshot_file: Path) -> str:
    if not cfg.data.dvc_track:
        return versioning.content_hash(snapshot_file)
    data_hash = versioning.dvc_track(project, snapshot_file.parent)
    if cfg.data.dvc_remote:
        versioning.dvc_push(project, pointer_of(cfg), cfg.data.dvc_remote)
    return data_hash


def ingest_validated(cfg: Config) -> tuple[ingest.Snapshot, str, list[str], validate.ValidationReport]:
    """Ingest, validate and only then commit the snapshot (the CLI's `emotion ingest`); a refused one is discarded."""
    with staged_snapshot(cfg) as staging:
        labels, report = validate_stage(cfg, staging.snapshot.frame)
    return staging.snapshot, staging.data_hash, labels, report


def restore_stage(cfg: Config, data_hash: str) -> Path:
    """Put the exact snapshot with ``data_hash`` back into data/ (and data.dvc); returns the snapshot file."""
    if not data_hash.endswith(".dir"):
        raise PipelineError(f"'{data_hash}' is not a DVC directory hash: was that data tracked with DVC?")
    with project_lock(cfg, "snapshot restore"):
        versioning.dvc_restore(Path(cfg.project_dir).resolve(), pointer_of(cfg), data_hash)
    return Layout.of(cfg).snapshot / ingest.SNAPSHOT_NAME
