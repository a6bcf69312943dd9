"""The training flow: ingest -> validate -> clean/encode -> train -> evaluate -> behaviour -> gate -> register.

Thin Prefect wrappers over ``pipeline.stages``. Every run is one MLflow run; every gated run registers a
version with alias ``challenger``; ``champion`` moves only through ``tracking.promote``, the last step, and
only when the gate passed against the champion that is current at promotion time.
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.caching import validation_cache_key
from pipeline import stages
from pipeline.config import Config
from pipeline.data.encode import PreparedData
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate, gate, model_card
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.evaluate import Evaluation
from pipeline.monitoring.reference import log_reference
from pipeline.registry import tracking
from pipeline.registry.versioning import git_commit
from pipeline.training.train import TrainResult

PROMOTION_ATTEMPTS = 3  # re-score and re-gate when another run moved the champion meanwhile


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: Config) -> tuple[Any, str]:
    return stages.ingest_stage(cfg)


@task(name="validate", cache_key_fn=validation_cache_key, cache_expiration=timedelta(days=30))
def validate_task(cfg: Config, frame: Any, data_hash: str) -> tuple[list[str], Any]:
    """Cached on the snapshot hash, labels, check settings and code: an unchanged snapshot is checked once."""
    return stages.validate_stage(cfg, frame)


@task(name="clean-and-encode", cache_policy=NO_CACHE)
def prepare_task(cfg: Config, frame: Any, labels: list[str]) -> tuple[PreparedData, Any]:
    return stages.prepare_stage(cfg, frame, labels)


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def train_task(cfg: Config, prepared: PreparedData, run_id: str) -> TrainResult:
    mlflow_client = tracking.client(cfg)

    def log_epoch(row: dict[str, float]) -> None:
        tracking.log_metrics(
            mlflow_client, run_id, {k: v for k, v in row.items() if k not in ("epoch", "step")}, step=int(row["epoch"])
        )

    return stages.train_stage(cfg, prepared, log_epoch)  # a retry resumes from the last checkpoint


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: Config, prepared: PreparedData) -> tuple[Evaluation, dict[str, Path]]:
    return stages.evaluate_stage(cfg, prepared)


@task(name="behaviour", cache_policy=NO_CACHE)
def behaviour_task(cfg: Config, prepared: PreparedData) -> BehaviourReport:
    return stages.behaviour_stage(cfg, prepared)


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_task(cfg: Config, prepared: PreparedData) -> tuple[str | None, dict[str, float] | None, list[str]]:
    """Score the current champion on this run's test set; (version, metrics, notes)."""
    mlflow_client = tracking.client(cfg)
    current = tracking.version_by_alias(cfg, mlflow_client, tracking.CHAMPION)
    if current is None:
        return None, None, []
    version = str(current.version)
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        model_dir = tracking.download_model(f"models:/{cfg.mlflow.registered_model}/{version}", Path(tmp))
        try:
            evaluation = stages.score_model(cfg, model_dir, prepared)
        except PipelineError as exc:
            return version, None, [f"champion v{version} not comparable on this test set: {exc}"]
    return version, evaluation.metrics, [f"champion v{version} scored on the same test set"]


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_task(cfg: Config, run_id: str, labels: list[str], tags: dict[str, str], description: str) -> str:
    """Log the model and create its version (tags and card in one call), alias challenger."""
    mlflow_client = tracking.client(cfg)
    logged = tracking.log_model(run_id, stages.Layout.of(cfg).model, labels)
    version = tracking.register(cfg, mlflow_client, logged, run_id, tags, description)
    tracking.set_alias(cfg, mlflow_client, tracking.CHALLENGER, version)
    return version


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(cfg: Config, version: str, run_id: str, compared_with: str | None, reason: str) -> None:
    tracking.promote(
        cfg,
        tracking.client(cfg),
        version,
        actor=f"training-flow run {run_id}",
        reason=reason,
        kind="gate",
        expected_champion=compared_with,
    )


def version_tags(
    lineage: dict[str, str],
    labels: list[str],
    evaluation: Evaluation,
    verdict: gate.GateVerdict,
    champion_version: str | None,
    champion_metrics: dict[str, float] | None,
    calibration: dict[str, float],
) -> dict[str, str]:
    """Lineage, gate result, and both score sets (challenger and champion on the same test set)."""

    def scores(metrics: dict[str, float] | None) -> str:
        return json.dumps({k: round(v, 4) for k, v in (metrics or {}).items()})

    return lineage | {
        "gate": "passed" if verdict.passed else "failed",
        "gate_failed_checks": "; ".join(c.name for c in verdict.failed)[:4000],
        "accuracy": f"{evaluation.metrics['accuracy']:.4f}",
        "macro_f1": f"{evaluation.metrics['macro_f1']:.4f}",
        "ece": f"{evaluation.metrics['ece']:.4f}" if "ece" in evaluation.metrics else "n/a",
        "temperature": f"{calibration.get('temperature', 1.0):.4f}",
        "labels": ",".join(labels),
        "compared_with_champion": champion_version or "none",
        "scores.challenger": scores(evaluation.metrics),
        "scores.champion": scores(champion_metrics),
    }


@flow(name="emotion-training", log_prints=True)
def training_flow(cfg: Config) -> dict[str, Any]:
    """Run the whole training path once and return a summary of what happened."""
    logger = get_run_logger()
    mlflow_client = tracking.client(cfg)
    layout = stages.Layout.of(cfg)
    run = mlflow_client.create_run(
        tracking.experiment_id(cfg, mlflow_client), tags={"data_source": cfg.data.source, "model_name": cfg.model.name}
    )
    run_id = run.info.run_id
    tracking.log_params(mlflow_client, run_id, cfg)
    status = "FAILED"
    try:
        snapshot, data_hash = ingest_task(cfg)
        lineage = {
            "data_hash": data_hash,
            "data_source": cfg.data.source,
            "git_commit": git_commit(Path(cfg.project_dir).resolve()),
            "run_id": run_id,
        }
        for key, value in lineage.items():
            mlflow_client.set_tag(run_id, key, value)
        try:
            labels, validation = validate_task(cfg, snapshot.frame, data_hash)
            validation.write(layout.reports)  # outside the cached task: a cache hit still leaves the report
        finally:
            if (layout.reports / "validation_report.md").exists():
                mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        log_reference(cfg, mlflow_client, run_id, snapshot.frame)  # what monitoring compares new text with
        prepared, changes = prepare_task(cfg, snapshot.frame, labels)
        mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        for name in ("class_distribution.png", "text_length.png"):
            mlflow_client.log_artifact(run_id, str(layout.plots / name), "eda")
        trained = train_task(cfg, prepared, run_id)
        tracking.log_metrics(
            mlflow_client,
            run_id,
            {
                "train_samples_per_second": trained.samples_per_second,
                "train_seconds": trained.train_seconds,
                "best_epoch": trained.best_epoch,
                "selected_val_macro_f1": trained.val_macro_f1,
                "weight_average_kept": float(trained.averaged),
                **trained.calibration,
            },
        )
        evaluation, paths = evaluate_task(cfg, prepared)
        tracking.log_metrics(mlflow_client, run_id, evaluation.metrics, prefix="test_")
        behaviour = behaviour_task(cfg, prepared)
        tracking.log_metrics(
            mlflow_client,
            run_id,
            {k: v for k, v in behaviour.to_dict().items() if isinstance(v, float)},
            prefix="behaviour_",
        )

        version, promoted, notes_extra = None, False, []
        for attempt in range(1, PROMOTION_ATTEMPTS + 1):
            champion_version, champion_metrics, notes = champion_task(cfg, prepared)
            verdict = gate.decide(
                evaluation.metrics, champion_metrics, cfg.gate, labels, behaviour, notes + notes_extra
            )
            tracking.write_json(
                layout.root / "gate.json",
                verdict.to_dict() | {"champion_version": champion_version, "champion_metrics": champion_metrics},
            )
            (layout.root / "gate.md").write_text(verdict.to_markdown())
            (layout.root / "comparison.md").write_text(
                evaluate.comparison(evaluation.metrics, champion_metrics, labels)
            )
            tags = version_tags(
                lineage, labels, evaluation, verdict, champion_version, champion_metrics, trained.calibration
            )
            card = model_card.build(labels, lineage, evaluation.metrics, verdict, trained.calibration, champion_version)
            if version is None:
                version = register_task(cfg, run_id, labels, tags, card)
            else:  # re-gated against a newer champion: bring the record up to date
                for key, value in tags.items():
                    mlflow_client.set_model_version_tag(cfg.mlflow.registered_model, version, key, value)
                mlflow_client.update_model_version(cfg.mlflow.registered_model, version, card)
            if not verdict.passed:
                break
            try:
                promote_task(
                    cfg,
                    version,
                    run_id,
                    champion_version,
                    f"passed the gate ({len(verdict.checks)} checks) against champion "
                    f"{'v' + champion_version if champion_version else 'none'}",
                )
                promoted = True
                break
            except tracking.StaleChampion as exc:
                logger.warning("attempt %d: %s; scoring the new champion and gating again", attempt, exc)
                notes_extra = [f"re-gated after: {exc}"]
        for path in [
            *paths.values(),
            layout.root / "gate.json",
            layout.root / "gate.md",
            layout.root / "comparison.md",
            layout.root / "behaviour.json",
            layout.plots / "training_curve.png",
            layout.plots / "training_curve.csv",
        ]:
            mlflow_client.log_artifact(run_id, str(path), "evaluation")
        if champion_metrics:
            tracking.log_metrics(mlflow_client, run_id, champion_metrics, prefix="champion_test_")
        mlflow_client.set_tag(run_id, "gate", "passed" if verdict.passed else "failed")
        mlflow_client.set_tag(run_id, "model_version", version)
        for reason in verdict.reasons:
            logger.info("gate: %s", reason)
        status = "FINISHED"
    finally:
        mlflow_client.set_terminated(run_id, status)
    return {
        "run_id": run_id,
        "data_source": cfg.data.source,
        "data_hash": data_hash,
        "rows": snapshot.split_counts(),
        "cleaning": changes.reset_index().to_dict(orient="records"),
        "training": {
            "steps": trained.steps,
            "best_epoch": trained.best_epoch,
            "seconds": round(trained.train_seconds, 1),
            "samples_per_second": round(trained.samples_per_second, 1),
            "device": trained.device,
            "precision": trained.precision,
            "temperature": round(trained.calibration["temperature"], 4),
        },
        "metrics": {k: round(v, 4) for k, v in evaluation.metrics.items()},
        "behaviour": behaviour.to_dict(),
        "gate": verdict.to_dict() | {"reasons": verdict.reasons},
        "champion_before": champion_version,
        "champion_metrics": {k: round(v, 4) for k, v in (champion_metrics or {}).items()},
        "model": cfg.mlflow.registered_model,
        "version": version,
        "aliases": [tracking.CHALLENGER] + ([tracking.CHAMPION] if promoted else []),
    }
