"""Artifact-level stages: each step plus where its outputs live under ``artifacts/``.

The CLI commands (and so the DVC stages) and the Prefect tasks call exactly these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import console
from pipeline.config import Config
from pipeline.data import clean, encode, ingest, validate
from pipeline.errors import PipelineError
from pipeline.evaluation import cross_validation, evaluate
from pipeline.ops import lock
from pipeline.ops.faults import fault_point
from pipeline.registry import versioning
from pipeline.training import teachers, train

if TYPE_CHECKING:
    from pipeline.evaluation.behaviour import BehaviourReport

log = logging.getLogger(__name__)


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


def _since(started: float) -> float:
    return time.perf_counter() - started


def staging_dir(cfg: Config) -> Path:
    """Where this process stages a new snapshot beside ``data/`` until validation has passed."""
    target = Layout.of(cfg).snapshot
    return target.with_name(f"{target.name}.staging-{os.getpid()}")


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
        "ingest", f"{sum(counts.values())} rows ({rows}) from {cfg.data.source}, hash {data_hash}", _since(started)
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
    staged, _ = ingest_stage(cfg)
    try:
        labels, report = validate_stage(cfg, staged.frame)
    except BaseException:
        discard_snapshot(staged)
        raise
    snapshot, data_hash = commit_snapshot(cfg, staged)
    return snapshot, data_hash, labels, report


def pointer_of(cfg: Config) -> Path:
    """The DVC pointer file of the snapshot folder (data.dvc)."""
    snapshot = Layout.of(cfg).snapshot
    return snapshot.with_name(snapshot.name + ".dvc")


def restore_stage(cfg: Config, data_hash: str) -> Path:
    """Put the exact snapshot with ``data_hash`` back into data/ (and data.dvc); returns the snapshot file."""
    if not data_hash.endswith(".dir"):
        raise PipelineError(f"'{data_hash}' is not a DVC directory hash: was that data tracked with DVC?")
    with project_lock(cfg, "snapshot restore"):
        versioning.dvc_restore(Path(cfg.project_dir).resolve(), pointer_of(cfg), data_hash)
    return Layout.of(cfg).snapshot / ingest.SNAPSHOT_NAME


def validate_stage(
    cfg: Config, frame: pd.DataFrame, layout: Layout | None = None
) -> tuple[list[str], validate.ValidationReport]:
    """Decide the label set and run the data checks (with the ingest report of this snapshot, when there is one);
    raises DataValidationError with the report."""
    labels = encode.label_set(frame, cfg.data.labels)
    if not labels and "label" in frame and frame["label"].isna().all():
        raise PipelineError(
            f"the label column (data.label_column={cfg.data.label_column}) is empty in every row: "
            "point data.label_column at the column holding the labels (`emotion inspect` shows the columns)"
        )
    if not labels:
        raise PipelineError("no labels: declare data.labels in params.yaml or provide a train split with labels")
    layout = layout or Layout.of(cfg)
    source = keep_ingest_report(cfg, layout)
    return labels, validate.validate(frame, labels, layout.reports, cfg.checks, source)


def keep_ingest_report(cfg: Config, layout: Layout) -> dict[str, Any] | None:
    """Copy this snapshot's ingest report beside the validation report (so MLflow keeps it too); returns it.

    The report is bound to snapshot bytes: those in data/, or those this process staged and is validating. The flow
    calls it again after a cached validation, which did not run this.
    """
    source = ingest.read_report(layout.ingest_report, layout.snapshot) or ingest.read_report(
        layout.ingest_report, staging_dir(cfg)
    )
    copy = layout.reports / "ingest_report.json"
    copy.unlink(missing_ok=True)
    if source is not None:
        layout.reports.mkdir(parents=True, exist_ok=True)
        copy.write_text(json.dumps(source, indent=2, ensure_ascii=False))
    return source


def prepare_stage(
    cfg: Config, frame: pd.DataFrame, labels: list[str], layout: Layout | None = None
) -> tuple[encode.PreparedData, pd.DataFrame]:
    """Clean and encode validated rows, save them with the label map; returns them and the cleaning table."""
    started = time.perf_counter()
    layout = layout or Layout.of(cfg)
    from pipeline.evaluation.plots import write_data_plots

    cleaned = clean.clean(frame, cfg.clean)
    prepared = encode.encode(cleaned.frame, labels)
    prepared.save(layout.prepared)
    write_data_plots(cleaned.frame, labels, layout.plots)
    layout.reports.mkdir(parents=True, exist_ok=True)
    cleaned.changes.to_csv(layout.reports / "cleaning.csv")
    kept, given = int(cleaned.changes["rows_out"].sum()), int(cleaned.changes["rows_in"].sum())
    kind = "multi-label" if prepared.label_map.multi_label else "single-label"
    console.stage("clean/encode", f"{kept} of {given} rows kept, {len(labels)} labels ({kind})", _since(started))
    return prepared, cleaned.changes


def train_stage(
    cfg: Config,
    prepared: encode.PreparedData,
    on_evaluation: train.EpochCallback | None = None,
    layout: Layout | None = None,
) -> train.TrainResult:
    """Fine-tune, save the model folder, and write the training curve (CSV for DVC, PNG for people).

    Checkpoints go to the layout's own folder: a run resumes only its own (a killed one, or a retried task).
    """
    from pipeline.evaluation.plots import write_training_curve

    layout = layout or Layout.of(cfg)
    teachers.check_student_config(cfg, layout.root, layout.checkpoints)
    result = train.train(prepared, cfg.model, cfg.train, layout.model, on_evaluation, layout.checkpoints)
    if result.rank == 0:  # under torchrun the other ranks only train
        clean.save_text_policy(layout.model, cfg.clean)
        write_training_curve(result.history, layout.plots)
        summary = {k: v for k, v in vars(result).items() if k not in ("history", "model_dir", "calibration")}
        (layout.root / "training_summary.json").write_text(json.dumps(summary | result.calibration, indent=2))
        console.stage(
            "train",
            f"{result.steps} steps, {result.samples_per_second:.1f} samples/s ({result.device}, {result.precision}), "
            f"best epoch {result.best_epoch}, validation macro-F1 {result.val_macro_f1:.4f}",
            result.train_seconds,
        )
    return result


def score_model(cfg: Config, model_dir: Path, prepared: encode.PreparedData) -> evaluate.Evaluation:
    """Score a model folder on the prepared test split (the same set for challenger and champion).

    The Evaluation keeps each row's decision and probabilities, for the paired comparison with the champion.
    """
    from pipeline.model.predict import Predictor

    predictor = Predictor(model_dir, cfg.train.device, cfg.train.precision, cfg.model.max_length)
    if predictor.labels != prepared.label_map.labels:
        raise PipelineError(
            f"model {model_dir} predicts {predictor.labels}, but the data has labels {prepared.label_map.labels}"
        )
    probs = predictor.predict_proba(prepared.texts("test"))
    return evaluate.score(
        prepared.targets("test"), probs, prepared.label_map.labels, predictor.thresholds, cfg.evaluate
    )


def behaviour_stage(cfg: Config, prepared: encode.PreparedData, layout: Layout | None = None) -> BehaviourReport:
    """Minimum-functionality and invariance tests of the trained model; written to artifacts/behaviour.json."""
    from pipeline.evaluation.behaviour import run_suite
    from pipeline.model.predict import Predictor

    started = time.perf_counter()
    layout = layout or Layout.of(cfg)
    predictor = Predictor(layout.model, cfg.train.device, cfg.train.precision, cfg.model.max_length)
    report = run_suite(
        predictor.predict_proba, prepared.label_map.labels, prepared.texts("test"), cfg.gate.invariance_tolerance
    )
    (layout.root / "behaviour.json").write_text(json.dumps(report.to_dict(), indent=2))
    mft = "n/a" if report.mft_accuracy is None else f"{report.mft_accuracy:.3f}"
    console.stage(
        "behaviour",
        f"minimum functionality {mft}, invariance {report.invariance_rate:.3f} ({report.cases} cases)",
        _since(started),
    )
    return report


def evaluate_stage(
    cfg: Config, prepared: encode.PreparedData, layout: Layout | None = None
) -> tuple[evaluate.Evaluation, dict[str, Path]]:
    """Score the trained model on test and write metrics.json, the report and the plots."""
    started = time.perf_counter()
    layout = layout or Layout.of(cfg)
    evaluation = score_model(cfg, layout.model, prepared)
    paths = evaluate.write_evaluation(evaluation, layout.root, layout.plots)
    scores = f"accuracy {evaluation.metrics['accuracy']:.4f}, macro-F1 {evaluation.metrics['macro_f1']:.4f}"
    console.stage("evaluate", f"test {scores} ({len(prepared.texts('test'))} rows)", _since(started))
    return evaluation, paths


def cv_folds_stage(cfg: Config, prepared: encode.PreparedData, official_split: bool) -> list[cross_validation.Fold]:
    """The folds to cross-validate (seeded by data.split_seed, like the split itself); none when
    evaluate.cv_folds is 0, or the source came with its own split and evaluate.cv_always is false."""
    if not cross_validation.applies(cfg.evaluate.cv_folds, cfg.evaluate.cv_always, official_split):
        return []
    return cross_validation.make_folds(prepared, cfg.evaluate.cv_folds, cfg.data.split_seed)


def cv_fold_stage(
    cfg: Config, fold: cross_validation.Fold, parent_run_id: str, layout: Layout | None = None
) -> dict[str, float]:
    """Train on a fold's training rows (selecting on its inner validation slice), score its held-out rows, as an
    MLflow child run of ``parent_run_id``; returns the point metrics. The fold's model is deleted: only scores stay."""
    from pipeline.registry import tracking

    mlflow_client = tracking.client(cfg)
    run_id = tracking.start_child_run(cfg, mlflow_client, parent_run_id, f"cv-fold-{fold.index}")
    sizes = {f"cv.{split}_rows": len(frame) for split, frame in fold.data.splits.items()}
    tracking.log_param_values(mlflow_client, run_id, {"cv.fold": fold.index} | sizes)
    layout = layout or Layout.of(cfg)
    work = layout.root / "cv" / f"fold-{fold.index}"
    status = "FAILED"

    def log_epoch(row: dict[str, float]) -> None:
        scores = {k: v for k, v in row.items() if k not in ("epoch", "step")}
        tracking.log_metrics(mlflow_client, run_id, scores, step=int(row["epoch"]))

    try:
        checkpoints = layout.checkpoints / f"cv-fold-{fold.index}"
        train.train(fold.data, cfg.model, cfg.train, work / "model", log_epoch, checkpoint_dir=checkpoints)
        clean.save_text_policy(work / "model", cfg.clean)  # scored exactly as the final model is
        scores = cross_validation.point_metrics(score_model(cfg, work / "model", fold.data).metrics)
        tracking.log_metrics(mlflow_client, run_id, scores)
        status = "FINISHED"
    finally:
        tracking.end_run(mlflow_client, run_id, status)
        shutil.rmtree(work, ignore_errors=True)
    log.info("cv fold %d: accuracy %.4f, macro-F1 %.4f", fold.index, scores["accuracy"], scores["macro_f1"])
    return scores


def cv_summary_stage(
    cfg: Config,
    folds: list[cross_validation.Fold],
    scores: list[dict[str, float]],
    parent_run_id: str,
    started: float,
    layout: Layout | None = None,
) -> cross_validation.CrossValidation:
    """Mean and std per metric: cv.json and the per-fold table written, logged on the parent run, one console line."""
    from pipeline.registry import tracking

    result = cross_validation.CrossValidation(scores, cfg.data.split_seed, [len(f.data.splits["test"]) for f in folds])
    layout = layout or Layout.of(cfg)
    paths = result.write(layout.root, layout.reports)
    mlflow_client = tracking.client(cfg)
    tracking.log_metrics(mlflow_client, parent_run_id, result.tracking_metrics())
    tracking.log_files(mlflow_client, parent_run_id, paths, "cv")
    console.stage("cross-val", result.headline() + " (mean ± std)", _since(started))
    return result
