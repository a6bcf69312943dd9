"""The training flow: ingest -> validate -> clean/encode -> [cross-validate] -> train -> evaluate -> behaviour -> gate
-> register.

Thin Prefect wrappers over ``pipeline.stages`` and ``pipeline.registry.promotion``. Every run is one MLflow run
and works in its own folder ``artifacts/runs/<run id>/`` (prepared data, checkpoints, model, evaluation files), so
runs in one project (a manual one, a scheduled or drift-triggered retrain) never mix; after the snapshot commit it
works from the frame it committed, not from data/. ``artifacts/latest`` points at the last finished run.
gate -> register -> (champion moved meanwhile: score it again, gate again) -> promote is
``promotion.gate_and_promote``, the last step, shared with `emotion register`.
"""

from __future__ import annotations

import functools
import json
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
from pipeline.registry import connection, promotion, run_log
from pipeline.training import teachers
from pipeline.training.train import TrainResult


@task(name="validate", cache_key_fn=validation_cache_key, cache_expiration=timedelta(days=30))
def validate_task(cfg: Config, frame: Any, data_hash: str, layout: stages.Layout) -> tuple[list[str], Any]:
    """Cached on the snapshot hash, labels, check settings and code: an unchanged snapshot is checked once."""
    return stages.validate_stage(cfg, frame, layout)


@task(name="clean-and-encode", cache_policy=NO_CACHE)
def prepare_task(cfg: Config, frame: Any, labels: list[str], layout: stages.Layout) -> tuple[PreparedData, Any]:
    return stages.prepare_stage(cfg, frame, labels, layout)


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def train_task(cfg: Config, prepared: PreparedData, run_id: str, layout: stages.Layout) -> TrainResult:
    mlflow_client = connection.client(cfg.registry)

    def log_epoch(row: dict[str, float]) -> None:
        run_log.log_metrics(
            mlflow_client, run_id, {k: v for k, v in row.items() if k not in ("epoch", "step")}, step=int(row["epoch"])
        )

    return stages.train_stage(cfg, prepared, log_epoch, layout)  # a retry resumes from the run's last checkpoint


@task(name="cv-fold", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def cv_fold_task(cfg: Config, fold: Fold, run_id: str, layout: stages.Layout) -> dict[str, float]:
    return stages.cv_fold_stage(cfg, fold, run_id, layout)  # a retry resumes the fold from its checkpoint


def cross_validate(
    cfg: Config, snapshot: Snapshot, prepared: PreparedData, run_id: str, layout: stages.Layout
) -> CrossValidation | None:
    """evaluate.cv_folds: K folds of train + validation, each an MLflow child run, before the final model."""
    official_split = snapshot.report is None or not snapshot.report.split_assigned
    folds = stages.cv_folds_stage(cfg, prepared, official_split)
    if not folds:
        return None
    started = time.perf_counter()
    scores = [cv_fold_task(cfg, fold, run_id, layout) for fold in folds]
    return stages.cv_summary_stage(cfg, folds, scores, run_id, started, layout)


@task(name="teacher", cache_policy=NO_CACHE)
def teacher_task(
    cfg: Config, teacher: teachers.Teacher, prepared: PreparedData, parent_run_id: str, threads: int | None
) -> teachers.TaughtTeacher:
    """One teacher as an MLflow child run of the training run: its settings, curve and validation figures."""
    mlflow_client = connection.client(cfg.registry)
    params = run_log.flatten({"train": teacher.train.model_dump()}) | {"model.name": cfg.model.name}
    run_id = run_log.start_child_run(
        cfg.registry,
        mlflow_client,
        parent_run_id,
        f"teacher-{teacher.name}",
        params,
        {"model_dir": str(teacher.model_dir), "model_name": cfg.model.name},
    )
    status = "FAILED"
    try:

        def log_epoch(row: dict[str, float]) -> None:
            metrics = {k: v for k, v in row.items() if k not in ("epoch", "step")}
            run_log.log_metrics(mlflow_client, run_id, metrics, step=int(row["epoch"]))

        result = teachers.train_teacher(teacher, prepared, cfg.model, log_epoch, threads)
        run_log.log_metrics(mlflow_client, run_id, teachers.result_metrics(result))
        status = "FINISHED"
    finally:
        run_log.end_run(mlflow_client, run_id, status)
    return teachers.TaughtTeacher(
        teacher.name, str(teacher.model_dir), run_id, result.val_macro_f1, result.train_seconds
    )


@flow(name="emotion-teachers")
def teachers_flow(
    cfg: Config, plan: list[teachers.Teacher], prepared_dir: Path, parent_run_id: str
) -> list[teachers.TaughtTeacher]:
    """Every teacher as a task: one after another (the first failure ends the run), or submitted to the flow's
    task runner (``parallelism`` processes; the teachers in flight finish before the run fails, by name).

    Takes the run's prepared-data folder, not the data: a subflow's parameters go to the Prefect server, which
    refuses more than 512 KB (GoEmotions' splits are about 6 MB)."""
    prepared = PreparedData.load(prepared_dir)
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
    cfg: Config, plan: list[teachers.Teacher], prepared_dir: Path, run_id: str
) -> list[teachers.TaughtTeacher]:
    """The teachers' subflow; side by side in processes, which keep each teacher's torch threads and random
    state its own (threads in one process would share both)."""
    width = cfg.train.distill.parallelism
    if width == 1:
        return teachers_flow(cfg, plan, prepared_dir, run_id)
    runner: Any = ProcessPoolTaskRunner(max_workers=width)  # Prefect types with_options for thread-pool futures
    return teachers_flow.with_options(task_runner=runner)(cfg, plan, prepared_dir, run_id)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: Config, prepared: PreparedData, layout: stages.Layout) -> tuple[Evaluation, dict[str, Path]]:
    return stages.evaluate_stage(cfg, prepared, layout)


@task(name="behaviour", cache_policy=NO_CACHE)
def behaviour_task(cfg: Config, prepared: PreparedData, layout: stages.Layout) -> BehaviourReport:
    return stages.behaviour_stage(cfg, prepared, layout)


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_task(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
    return stages.score_champion(cfg, prepared)


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def promote_task(cfg: Config, evaluated: promotion.EvaluatedRun, prepared: PreparedData) -> promotion.PromotionResult:
    """Gate, register (alias challenger), promote; champion scoring runs as its own retried task."""
    return stages.gate_and_promote(
        cfg, evaluated, prepared, actor=f"training-flow run {evaluated.run_id}", score=champion_task
    )


@flow(name="emotion-training", log_prints=True)
def training_flow(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Run the whole training path once in a run folder of its own and return a summary of what happened.

    ``resume``: the MLflow run id of a killed or failed run, continued in its folder from its last checkpoint.
    A finished run moves ``artifacts/latest`` to its folder; a failed one leaves it where it was.
    """
    mlflow_client = connection.client(cfg.registry)
    run_id = _resumable(cfg, mlflow_client, resume) if resume else stages.start_run(cfg, mlflow_client)
    layout = stages.Layout.for_run(cfg, run_id)
    plan = teachers.plan(cfg.train, layout.root, layout.checkpoints)  # [] unless train.distill.teacher_seeds
    if plan:  # the student learns from these folders; the run's tags name them (its params keep the config's)
        cfg = cfg.model_copy(update={"train": teachers.student_config(cfg.train, plan)})
        run_log.set_tags(mlflow_client, run_id, {"distill.teacher_dirs": json.dumps(cfg.train.teachers)})
    with stages.run_lock(layout):
        status = "FAILED"
        try:
            summary = _train_and_register(cfg, mlflow_client, run_id, layout, plan)
            status = "FINISHED"
        finally:
            console.attach_run_log(mlflow_client, run_id)
            run_log.end_run(mlflow_client, run_id, status)
        latest = stages.publish_latest(cfg, layout)
    return summary | {"run_dir": str(layout.root), "latest": str(latest)}


def _resumable(cfg: Config, mlflow_client: Any, run_id: str) -> str:
    """A run to continue: known to MLflow, not finished, its folder still there."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(
            f"no MLflow run {run_id} to resume in {cfg.tracking_uri}: see the run ids in the UI"
        ) from exc
    if run.info.status == "FINISHED":
        raise PipelineError(f"run {run_id} has finished: nothing to resume; start a new one with `emotion run`")
    folder = stages.Layout.for_run(cfg, run_id).root
    if not folder.is_dir():
        raise PipelineError(f"run {run_id} has no folder {folder} to resume in: start a new run with `emotion run`")
    mlflow_client.update_run(run_id, status="RUNNING")
    return run_id


def _train_and_register(
    cfg: Config, mlflow_client: Any, run_id: str, layout: stages.Layout, plan: list[teachers.Teacher]
) -> dict[str, Any]:
    """The run's steps in order, each followed by one call that logs what it returned."""
    record = functools.partial(run_log.record, mlflow_client, run_id)
    with stages.staged_snapshot(cfg, layout) as staging:  # data/, data.dvc and the remote change only on leaving
        record(stages.ingest_logged(staging.snapshot, stages.lineage_of(cfg, staging.data_hash, run_id)))
        try:
            labels, validation = validate_task(cfg, staging.snapshot.frame, staging.data_hash, layout)
            stages.keep_validation(cfg, validation, layout)  # outside the cached task: a cache hit leaves them too
        finally:
            record(stages.reports_logged(layout))
    snapshot, data_hash = staging.snapshot, staging.data_hash  # from here on: its frame, never data/ again
    lineage = stages.lineage_of(cfg, data_hash, run_id)  # the hash DVC stored
    record(run_log.Logged(tags=lineage))
    log_reference(cfg, mlflow_client, run_id, snapshot.frame)  # what monitoring compares new text with
    prepared, changes = prepare_task(cfg, snapshot.frame, labels, layout)
    record(stages.prepare_logged(layout))
    cv = cross_validate(cfg, snapshot, prepared, run_id, layout)
    taught = train_teachers(cfg, plan, layout.prepared, run_id) if plan else []
    trained = train_task(cfg, prepared, run_id, layout)  # the student, when there are teachers
    record(stages.training_logged(trained, layout))
    evaluation, _ = evaluate_task(cfg, prepared, layout)
    behaviour = behaviour_task(cfg, prepared, layout)
    record(stages.evaluation_logged(evaluation.metrics, behaviour))
    evaluated = stages.evaluated_run(
        labels, evaluation.metrics, behaviour, trained.calibration, lineage, layout, cross_validation=cv
    )
    result = promote_task(cfg, evaluated, prepared)
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
