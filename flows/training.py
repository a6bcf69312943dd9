"""The training flow: ingest -> validate -> clean/encode -> train -> evaluate -> gate -> register.

Thin Prefect wrappers over ``pipeline.stages``; every run is one MLflow run, and a model gets the
``champion`` alias only when the gate passes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline import gate, registry, stages
from pipeline.config import Config
from pipeline.encode import PreparedData
from pipeline.errors import PipelineError
from pipeline.evaluate import Evaluation
from pipeline.train import TrainResult
from pipeline.versioning import git_commit


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: Config) -> tuple[Any, str]:
    return stages.ingest_stage(cfg)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(cfg: Config, frame: Any) -> list[str]:
    labels, _ = stages.validate_stage(cfg, frame)
    return labels


@task(name="clean-and-encode", cache_policy=NO_CACHE)
def prepare_task(cfg: Config, frame: Any, labels: list[str]) -> tuple[PreparedData, Any]:
    return stages.prepare_stage(cfg, frame, labels)


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: Config, prepared: PreparedData, run_id: str) -> TrainResult:
    mlflow_client = registry.client(cfg)

    def log_epoch(row: dict[str, float]) -> None:
        registry.log_metrics(mlflow_client, run_id, {k: v for k, v in row.items() if k not in ("epoch", "step")},
                             step=int(row["epoch"]))

    return stages.train_stage(cfg, prepared, log_epoch)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: Config, prepared: PreparedData) -> tuple[Evaluation, dict[str, Path]]:
    return stages.evaluate_stage(cfg, prepared)


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_task(cfg: Config, prepared: PreparedData) -> tuple[str | None, dict[str, float] | None, list[str]]:
    """Score the current champion on this run's test set; (version, metrics, notes)."""
    mlflow_client = registry.client(cfg)
    current = registry.version_by_alias(cfg, mlflow_client, registry.CHAMPION)
    if current is None:
        return None, None, []
    version = str(current.version)
    model_dir = registry.download_model(f"models:/{cfg.mlflow.registered_model}/{version}",
                                        Path(tempfile.mkdtemp(prefix="champion-")))
    try:
        evaluation = stages.score_model(cfg, model_dir, prepared)
    except PipelineError as exc:
        return version, None, [f"champion v{version} not comparable on this test set: {exc}"]
    return version, evaluation.metrics, [f"champion v{version} scored on the same test set"]


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_task(cfg: Config, run_id: str, prepared: PreparedData, evaluation: Evaluation,
                  verdict: gate.GateVerdict, lineage: dict[str, str]) -> str:
    """Register the candidate (alias challenger); give it champion only if the gate passed."""
    mlflow_client = registry.client(cfg)
    model_uri = registry.log_model(run_id, stages.Layout.of(cfg).model, prepared.label_map.labels)
    tags = lineage | {
        "gate": "passed" if verdict.passed else "failed",
        "accuracy": f"{evaluation.metrics['accuracy']:.4f}",
        "macro_f1": f"{evaluation.metrics['macro_f1']:.4f}",
        "labels": ",".join(prepared.label_map.labels),
    }
    description = "\n".join([
        f"Emotion classifier over labels: {', '.join(prepared.label_map.labels)}.",
        f"Data: {lineage['data_source']} (hash {lineage['data_hash']}); code {lineage['git_commit']}.",
        f"Test accuracy {evaluation.metrics['accuracy']:.4f}, macro-F1 {evaluation.metrics['macro_f1']:.4f}.",
        "Gate: " + ("passed" if verdict.passed else "failed") + "; " + "; ".join(verdict.reasons),
    ])
    version = registry.register(cfg, mlflow_client, model_uri, run_id, tags, description)
    registry.set_alias(cfg, mlflow_client, registry.CHALLENGER, version)
    if verdict.passed:
        registry.set_alias(cfg, mlflow_client, registry.CHAMPION, version)
    return version


@flow(name="emotion-training", log_prints=True)
def training_flow(cfg: Config) -> dict[str, Any]:
    """Run the whole training path once and return a summary of what happened."""
    logger = get_run_logger()
    mlflow_client = registry.client(cfg)
    layout = stages.Layout.of(cfg)
    run = mlflow_client.create_run(registry.experiment_id(cfg, mlflow_client),
                                   tags={"data_source": cfg.data.source, "model_name": cfg.model.name})
    run_id = run.info.run_id
    registry.log_params(mlflow_client, run_id, cfg)
    status = "FAILED"
    try:
        snapshot, data_hash = ingest_task(cfg)
        lineage = {"data_hash": data_hash, "data_source": cfg.data.source,
                   "git_commit": git_commit(Path(cfg.project_dir).resolve()), "run_id": run_id}
        for key, value in lineage.items():
            mlflow_client.set_tag(run_id, key, value)
        try:
            labels = validate_task(cfg, snapshot.frame)
        finally:
            if (layout.reports / "validation_report.md").exists():
                mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        prepared, changes = prepare_task(cfg, snapshot.frame, labels)
        mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        trained = train_task(cfg, prepared, run_id)
        registry.log_metrics(mlflow_client, run_id, {"train_samples_per_second": trained.samples_per_second,
                                                     "train_seconds": trained.train_seconds, "best_epoch": trained.best_epoch})
        evaluation, paths = evaluate_task(cfg, prepared)
        registry.log_metrics(mlflow_client, run_id, evaluation.metrics, prefix="test_")
        champion_version, champion_metrics, notes = champion_task(cfg, prepared)
        verdict = gate.decide(evaluation.metrics, champion_metrics, cfg.gate, notes)
        registry.write_json(layout.root / "gate.json", verdict.to_dict() | {"champion_metrics": champion_metrics})
        for path in [*paths.values(), layout.root / "gate.json", layout.plots / "training_curve.png",
                     layout.plots / "training_curve.csv"]:
            mlflow_client.log_artifact(run_id, str(path), "evaluation")
        if champion_metrics:
            registry.log_metrics(mlflow_client, run_id, champion_metrics, prefix="champion_test_")
        mlflow_client.set_tag(run_id, "gate", "passed" if verdict.passed else "failed")
        for reason in verdict.reasons:
            logger.info("gate: %s", reason)
        version = register_task(cfg, run_id, prepared, evaluation, verdict, lineage)
        status = "FINISHED"
    finally:
        mlflow_client.set_terminated(run_id, status)
    return {
        "run_id": run_id,
        "data_source": cfg.data.source,
        "data_hash": data_hash,
        "rows": snapshot.split_counts(),
        "cleaning": changes.reset_index().to_dict(orient="records"),
        "training": {"steps": trained.steps, "best_epoch": trained.best_epoch, "seconds": round(trained.train_seconds, 1),
                     "samples_per_second": round(trained.samples_per_second, 1), "device": trained.device,
                     "precision": trained.precision},
        "metrics": {k: round(v, 4) for k, v in evaluation.metrics.items()},
        "gate": verdict.to_dict() | {"reasons": verdict.reasons},
        "champion_before": champion_version,
        "model": cfg.mlflow.registered_model,
        "version": version,
        "aliases": [registry.CHALLENGER] + ([registry.CHAMPION] if verdict.passed else []),
    }
