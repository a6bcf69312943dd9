"""Cross-validation before the final model (``evaluate.cv_folds``): the folds, one fold's training as an MLflow
child run, and the summary on the parent run."""

from __future__ import annotations

import logging
import shutil

from pipeline import console
from pipeline.config import Config
from pipeline.data import clean, encode
from pipeline.evaluation import cross_validation
from pipeline.stages.layout import Layout
from pipeline.stages.steps import score_model
from pipeline.training import train

log = logging.getLogger(__name__)


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
    from pipeline.registry import connection, run_log

    mlflow_client = connection.client(cfg.registry)
    run_id = run_log.start_child_run(
        cfg.registry, mlflow_client, parent_run_id, f"cv-fold-{fold.index}", tags={"model_name": cfg.model.name}
    )
    sizes = {f"cv.{split}_rows": len(frame) for split, frame in fold.data.splits.items()}
    run_log.log_param_values(mlflow_client, run_id, {"cv.fold": fold.index} | sizes)
    layout = layout or Layout.of(cfg)
    work = layout.root / "cv" / f"fold-{fold.index}"
    status = "FAILED"

    def log_epoch(row: dict[str, float]) -> None:
        scores = {k: v for k, v in row.items() if k not in ("epoch", "step")}
        run_log.log_metrics(mlflow_client, run_id, scores, step=int(row["epoch"]))

    try:
        checkpoints = layout.checkpoints / f"cv-fold-{fold.index}"
        train.train(fold.data, cfg.model, cfg.train, work / "model", log_epoch, checkpoint_dir=checkpoints)
        clean.save_text_policy(work / "model", cfg.clean)  # scored exactly as the final model is
        scores = cross_validation.point_metrics(score_model(cfg, work / "model", fold.data).metrics)
        run_log.log_metrics(mlflow_client, run_id, scores)
        status = "FINISHED"
    finally:
        run_log.end_run(mlflow_client, run_id, status)
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
    from pipeline.registry import connection, run_log

    result = cross_validation.CrossValidation(scores, cfg.data.split_seed, [len(f.data.splits["test"]) for f in folds])
    layout = layout or Layout.of(cfg)
    paths = result.write(layout.root, layout.reports)
    mlflow_client = connection.client(cfg.registry)
    run_log.log_metrics(mlflow_client, parent_run_id, result.tracking_metrics())
    run_log.log_files(mlflow_client, parent_run_id, paths, "cv")
    console.stage("cross-val", result.headline() + " (mean ± std)", console.since(started))
    return result
