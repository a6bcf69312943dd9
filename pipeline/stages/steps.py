"""The steps on artifacts: validate, prepare (clean and encode), train, evaluate, behaviour, each writing where its
``Layout`` says. The CLI commands (and so the DVC stages) and the Prefect tasks call exactly these functions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import console
from pipeline.config import Config
from pipeline.data import clean, encode, ingest, validate
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate
from pipeline.stages.layout import Layout, staging_dir
from pipeline.training import teachers, train

if TYPE_CHECKING:
    from pipeline.evaluation.behaviour import BehaviourReport

log = logging.getLogger(__name__)


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


def keep_validation(cfg: Config, validation: validate.ValidationReport, layout: Layout) -> None:
    """Write the validation report into the run's reports, with this snapshot's ingest report beside it, and say
    how the checks went (the flow calls it after its cached validation task, so a cache hit leaves them too)."""
    validation.write(layout.reports)
    keep_ingest_report(cfg, layout)
    console.stage("validate", validation.summary().splitlines()[0])


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
    console.stage("clean/encode", f"{kept} of {given} rows kept, {len(labels)} labels ({kind})", console.since(started))
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
    teachers.check_student_config(cfg.train, layout.root, layout.checkpoints)
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

    predictor = Predictor(
        model_dir, cfg.train.device, cfg.train.precision, cfg.model.max_length, cfg.model.inference_batch_size
    )
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
    predictor = Predictor(
        layout.model, cfg.train.device, cfg.train.precision, cfg.model.max_length, cfg.model.inference_batch_size
    )
    report = run_suite(
        predictor.predict_proba, prepared.label_map.labels, prepared.texts("test"), cfg.gate.invariance_tolerance
    )
    (layout.root / "behaviour.json").write_text(json.dumps(report.to_dict(), indent=2))
    mft = "n/a" if report.mft_accuracy is None else f"{report.mft_accuracy:.3f}"
    console.stage(
        "behaviour",
        f"minimum functionality {mft}, invariance {report.invariance_rate:.3f} ({report.cases} cases)",
        console.since(started),
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
    console.stage("evaluate", f"test {scores} ({len(prepared.texts('test'))} rows)", console.since(started))
    return evaluation, paths
