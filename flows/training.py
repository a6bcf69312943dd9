"""The training flow: ingest -> validate -> clean/encode -> [cross-validate] -> train -> evaluate -> behaviour -> gate
-> register.

Thin Prefect wrappers over ``pipeline.stages`` and ``pipeline.registry.promotion``. Every run is one MLflow run;
gate -> register -> (champion moved meanwhile: score it again, gate again) -> promote is
``promotion.gate_and_promote``, the last step, shared with `emotion register`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner

from flows.caching import validation_cache_key
from pipeline import console, stages
from pipeline.config import Config
from pipeline.data.encode import PreparedData
from pipeline.data.ingest import Snapshot
from pipeline.errors import PipelineError
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.cross_validation import CrossValidation, Fold
from pipeline.evaluation.evaluate import Evaluation
from pipeline.monitoring.reference import log_reference
from pipeline.redact import redact
from pipeline.registry import promotion, tracking
from pipeline.training import lora, teachers
from pipeline.training.train import TrainResult


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: Config) -> tuple[Any, str]:
    """A staged snapshot: data/, data.dvc and the remote change only in commit_task, after validation."""
    return stages.ingest_stage(cfg)


@task(name="commit-snapshot", cache_policy=NO_CACHE)
def commit_task(cfg: Config, staged: Any) -> tuple[Any, str]:
    return stages.commit_snapshot(cfg, staged)


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


@task(name="cv-fold", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def cv_fold_task(cfg: Config, fold: Fold, run_id: str) -> dict[str, float]:
    return stages.cv_fold_stage(cfg, fold, run_id)  # a retry resumes the fold from its checkpoint


def cross_validate(cfg: Config, snapshot: Snapshot, prepared: PreparedData, run_id: str) -> CrossValidation | None:
    """evaluate.cv_folds: K folds of train + validation, each an MLflow child run, before the final model."""
    official_split = snapshot.report is None or not snapshot.report.split_assigned
    folds = stages.cv_folds_stage(cfg, prepared, official_split)
    if not folds:
        return None
    started = time.perf_counter()
    scores = [cv_fold_task(cfg, fold, run_id) for fold in folds]
    return stages.cv_summary_stage(cfg, folds, scores, run_id, started)


@task(name="teacher", cache_policy=NO_CACHE)
def teacher_task(
    cfg: Config, teacher: teachers.Teacher, prepared: PreparedData, parent_run_id: str, threads: int | None
) -> teachers.TaughtTeacher:
    """One teacher as an MLflow child run of the training run: its settings, curve and validation figures."""
    mlflow_client = tracking.client(cfg)
    params = tracking.flatten({"train": teacher.train.model_dump()}) | {"model.name": cfg.model.name}
    run_id = tracking.start_child_run(
        cfg, mlflow_client, parent_run_id, f"teacher-{teacher.name}", params, {"model_dir": str(teacher.model_dir)}
    )
    status = "FAILED"
    try:

        def log_epoch(row: dict[str, float]) -> None:
            metrics = {k: v for k, v in row.items() if k not in ("epoch", "step")}
            tracking.log_metrics(mlflow_client, run_id, metrics, step=int(row["epoch"]))

        result = teachers.train_teacher(teacher, prepared, cfg.model, log_epoch, threads)
        tracking.log_metrics(mlflow_client, run_id, teachers.result_metrics(result))
        status = "FINISHED"
    finally:
        tracking.end_run(mlflow_client, run_id, status)
    return teachers.TaughtTeacher(
        teacher.name, str(teacher.model_dir), run_id, result.val_macro_f1, result.train_seconds
    )


@flow(name="emotion-teachers")
def teachers_flow(
    cfg: Config, plan: list[teachers.Teacher], prepared: PreparedData, parent_run_id: str
) -> list[teachers.TaughtTeacher]:
    """Every teacher as a task: one after another (the first failure ends the run), or submitted to the flow's
    task runner (``parallelism`` processes; the teachers in flight finish before the run fails, by name)."""
    if cfg.train.distill.parallelism == 1:
        taught = [teacher_task(cfg, teacher, prepared, parent_run_id, None) for teacher in plan]
    else:
        threads = teachers.threads_per_teacher(cfg.train.distill.parallelism, cfg.train.device)
        futures = [teacher_task.submit(cfg, teacher, prepared, parent_run_id, threads) for teacher in plan]
        wait(futures)
        outcomes = [f.result(raise_on_failure=False) for f in futures]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise PipelineError("; ".join(str(e) for e in failed)) from failed[0]
        taught = outcomes
    console.stage("teachers", ", ".join(f"{t.name} val macro-F1 {t.val_macro_f1:.4f}" for t in taught))
    return taught


def train_teachers(
    cfg: Config, plan: list[teachers.Teacher], prepared: PreparedData, run_id: str
) -> list[teachers.TaughtTeacher]:
    """The teachers' subflow; side by side in processes, which keep each teacher's torch threads and random
    state its own (threads in one process would share both)."""
    width = cfg.train.distill.parallelism
    if width == 1:
        return teachers_flow(cfg, plan, prepared, run_id)
    runner: Any = ProcessPoolTaskRunner(max_workers=width)  # Prefect types with_options for thread-pool futures
    return teachers_flow.with_options(task_runner=runner)(cfg, plan, prepared, run_id)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: Config, prepared: PreparedData) -> tuple[Evaluation, dict[str, Path]]:
    return stages.evaluate_stage(cfg, prepared)


@task(name="behaviour", cache_policy=NO_CACHE)
def behaviour_task(cfg: Config, prepared: PreparedData) -> BehaviourReport:
    return stages.behaviour_stage(cfg, prepared)


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_task(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
    return promotion.score_champion(cfg, prepared)


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def promote_task(cfg: Config, evaluated: promotion.EvaluatedRun, prepared: PreparedData) -> promotion.PromotionResult:
    """Gate, register (alias challenger), promote; champion scoring runs as its own retried task."""
    return promotion.gate_and_promote(
        cfg, evaluated, prepared, actor=f"training-flow run {evaluated.run_id}", score=champion_task
    )


@flow(name="emotion-training", log_prints=True)
def training_flow(cfg: Config) -> dict[str, Any]:
    """Run the whole training path once and return a summary of what happened."""
    mlflow_client = tracking.client(cfg)
    layout = stages.Layout.of(cfg)
    plan = teachers.plan(cfg, layout.root)  # [] unless train.distill.teacher_seeds
    cfg = teachers.student_config(cfg, plan)  # before the run starts: its params name the teachers' folders
    run_id = tracking.start_run(cfg, mlflow_client)
    status = "FAILED"
    try:
        snapshot, data_hash = ingest_task(cfg)  # staged, with the hash it will have once committed
        try:
            lineage = promotion.lineage_of(cfg, data_hash, run_id)
            tracking.set_tags(mlflow_client, run_id, lineage)
            if snapshot.report is not None:  # how the files were read, and the malformed rows left out
                read_params, read_metrics = snapshot.report.tracking_values()
                tracking.log_param_values(mlflow_client, run_id, read_params)
                tracking.log_metrics(mlflow_client, run_id, read_metrics)
            labels, validation = validate_task(cfg, snapshot.frame, data_hash)
            validation.write(layout.reports)  # outside the cached task: a cache hit still leaves the report
            console.stage("validate", validation.summary().splitlines()[0])
        except BaseException:
            stages.discard_snapshot(snapshot)  # a refused dataset never reaches data/, data.dvc or the remote
            raise
        finally:
            if (layout.reports / "validation_report.md").exists():
                mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        snapshot, committed = commit_task(cfg, snapshot)
        if committed != data_hash:  # DVC hashed it differently than predicted: record what it stored
            data_hash, lineage = committed, promotion.lineage_of(cfg, committed, run_id)
            tracking.set_tags(mlflow_client, run_id, lineage)
        log_reference(cfg, mlflow_client, run_id, snapshot.frame)  # what monitoring compares new text with
        prepared, changes = prepare_task(cfg, snapshot.frame, labels)
        mlflow_client.log_artifacts(run_id, str(layout.reports), "reports")
        tracking.log_files(
            mlflow_client, run_id, [layout.plots / "class_distribution.png", layout.plots / "text_length.png"], "eda"
        )
        cv = cross_validate(cfg, snapshot, prepared, run_id)
        taught = train_teachers(cfg, plan, prepared, run_id) if plan else []
        trained = train_task(cfg, prepared, run_id)  # the student, when there are teachers
        tracking.log_metrics(
            mlflow_client,
            run_id,
            {
                "train_samples_per_second": trained.samples_per_second,
                "train_seconds": trained.train_seconds,
                "best_epoch": trained.best_epoch,
                "selected_val_macro_f1": trained.val_macro_f1,
                "weight_average_kept": float(trained.averaged),
                "trainable_parameters": trained.trainable_parameters,
                "total_parameters": trained.total_parameters,
                **trained.calibration,
            },
        )
        adapter = layout.model / lora.ADAPTER_DIR
        if adapter.exists():  # LoRA: the adapter alone, beside the merged model logged at registration
            mlflow_client.log_artifacts(run_id, str(adapter), "adapter")
        evaluation, _ = evaluate_task(cfg, prepared)
        tracking.log_metrics(mlflow_client, run_id, evaluation.metrics, prefix="test_")
        behaviour = behaviour_task(cfg, prepared)
        tracking.log_metrics(mlflow_client, run_id, promotion.behaviour_metrics(behaviour), prefix="behaviour_")
        evaluated = promotion.EvaluatedRun(
            labels, evaluation.metrics, behaviour, trained.calibration, lineage, layout, cross_validation=cv
        )
        result = promote_task(cfg, evaluated, prepared)
        status = "FINISHED"
    finally:
        console.attach_run_log(mlflow_client, run_id)
        tracking.end_run(mlflow_client, run_id, status)
    return {
        "run_id": run_id,
        "data_source": redact(snapshot.source),  # a URI source may carry a password
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
            "trainable_parameters": trained.trainable_parameters,
            "total_parameters": trained.total_parameters,
            "temperature": round(trained.calibration["temperature"], 4),
        },
        "teachers": [vars(t) | {"val_macro_f1": round(t.val_macro_f1, 4)} for t in taught],
        "cross_validation": cv.to_dict() if cv else None,
        "metrics": {k: round(v, 4) for k, v in evaluation.metrics.items()},
        "behaviour": behaviour.to_dict(),
        "gate": result.verdict.to_dict() | {"reasons": result.verdict.reasons},
        "champion_before": result.champion_before,
        "champion_metrics": {k: round(v, 4) for k, v in (result.champion_metrics or {}).items()},
        "model": cfg.mlflow.registered_model,
        "version": result.version,
        "aliases": result.aliases,
    }
