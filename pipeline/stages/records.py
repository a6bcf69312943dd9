"""What each step asks to be logged on its MLflow run (``run_log.Logged``): the drivers log it in one call per step."""

from __future__ import annotations

from pipeline.data.ingest import Snapshot
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.registry.run_log import Logged
from pipeline.stages.layout import Layout
from pipeline.training.train import TrainResult


def ingest_logged(snapshot: Snapshot, lineage: dict[str, str]) -> Logged:
    """The lineage tags, and how the files were read with the malformed rows left out (when a report says so)."""
    if snapshot.report is None:
        return Logged(tags=lineage)
    params, metrics = snapshot.report.tracking_values()
    return Logged(params=params, metrics=metrics, tags=lineage)


def reports_logged(layout: Layout) -> Logged:
    """The run's reports folder (validation, ingest, cleaning), once there is something in it."""
    return Logged(folders={"reports": layout.reports}) if layout.reports.is_dir() else Logged()


def prepare_logged(layout: Layout) -> Logged:
    """The reports, and the two data plots (class distribution, text length) under ``eda/``."""
    plots = [layout.plots / "class_distribution.png", layout.plots / "text_length.png"]
    return reports_logged(layout) | Logged(files={"eda": plots})


def training_logged(trained: TrainResult, layout: Layout) -> Logged:
    """Speed, selection and calibration figures; a LoRA run's adapter alone (the merged model is logged at
    registration)."""
    from pipeline.training import lora

    metrics = {
        "train_samples_per_second": trained.samples_per_second,
        "train_seconds": trained.train_seconds,
        "best_epoch": trained.best_epoch,
        "selected_val_macro_f1": trained.val_macro_f1,
        "weight_average_kept": float(trained.averaged),
        "trainable_parameters": trained.trainable_parameters,
        "total_parameters": trained.total_parameters,
        **trained.calibration,
    }
    adapter = layout.model / lora.ADAPTER_DIR
    return Logged(metrics=metrics, folders={"adapter": adapter} if adapter.exists() else {})


def evaluation_logged(metrics: dict[str, float], behaviour: BehaviourReport) -> Logged:
    """The test metrics (``test_``) and the behaviour report's figures (``behaviour_``) as MLflow keeps them."""
    charted = {k: v for k, v in behaviour.to_dict().items() if isinstance(v, float)}
    tests = {f"test_{k}": v for k, v in metrics.items()}
    return Logged(metrics=tests | {f"behaviour_{k}": v for k, v in charted.items()})
