"""Registration at the stage level: the run's MLflow record, its lineage, scoring the champion on the run's test set,
and gating and promoting through ``registry.promotion`` with the config's sections (`emotion register`, the flow)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.encode import PreparedData
from pipeline.data.ingest import SNAPSHOT_NAME, describe_source
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.registry import connection, model_versions, promotion, run_log, versioning
from pipeline.stages.layout import Layout, pointer_of
from pipeline.stages.records import evaluation_logged
from pipeline.stages.steps import behaviour_stage, score_model

ChampionScorer = Callable[[Config, PreparedData], promotion.ChampionScore]


def start_run(cfg: Config, mlflow_client: Any) -> str:
    """A new run in the configured experiment, tagged with its data source and model, with every setting as params."""
    tags = {"data_source": describe_source(cfg.data.source), "model_name": cfg.model.name}
    return run_log.start_run(cfg.registry, mlflow_client, tags, run_log.flatten(cfg.model_dump()))


def lineage_of(cfg: Config, data_hash: str, run_id: str) -> dict[str, str]:
    """What a version was made from: data snapshot, source, code commit and the MLflow run."""
    return {
        "data_hash": data_hash,
        "data_source": describe_source(cfg.data.source),
        "git_commit": versioning.git_commit(Path(cfg.project_dir).resolve()),
        "run_id": run_id,
    }


def score_champion(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
    """Score the current champion on this run's test set, so both models are judged on the same texts."""
    registry = cfg.registry
    current = model_versions.version_by_alias(registry, connection.client(registry), model_versions.CHAMPION)
    if current is None:
        return promotion.ChampionScore(None, None)
    version = str(current.version)
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        model_dir = run_log.download_model(f"models:/{registry.model_name}/{version}", Path(tmp))
        try:
            evaluation = score_model(cfg, model_dir, prepared)
        except PipelineError as exc:
            notes = [f"champion v{version} not comparable on this test set: {exc}"]
            return promotion.ChampionScore(version, None, notes)
    notes = [f"champion v{version} scored on the same test set"]
    return promotion.ChampionScore(version, evaluation.metrics, notes, evaluation.y_pred)


def gate_and_promote(
    cfg: Config,
    evaluated: promotion.EvaluatedRun,
    prepared: PreparedData,
    *,
    actor: str,
    score: ChampionScorer = score_champion,
) -> promotion.PromotionResult:
    """``promotion.gate_and_promote`` with this config's registry, gate and bootstrap settings."""
    return promotion.gate_and_promote(
        cfg.registry,
        cfg.gate,
        cfg.evaluate,
        evaluated,
        prepared,
        actor=actor,
        score=lambda rows: score(cfg, rows),
        export_onnx=cfg.serve.export_onnx,
    )


def evaluated_run(
    labels: list[str],
    metrics: dict[str, float],
    behaviour: BehaviourReport,
    calibration: dict[str, float],
    lineage: dict[str, str],
    layout: Layout,
    **extra: Any,
) -> promotion.EvaluatedRun:
    """What gating needs of a run, with the paths its layout gives."""
    return promotion.EvaluatedRun(
        labels, metrics, behaviour, calibration, lineage, layout.root, layout.plots, layout.model, **extra
    )


def data_hash_of(cfg: Config) -> str:
    """The hash of the snapshot in data/: the DVC hash in data.dvc when DVC tracks it, else the file's md5."""
    pointer = pointer_of(cfg)
    if cfg.data.dvc_track and pointer.exists():
        return versioning.dvc_hash(pointer)
    snapshot = Layout.of(cfg).snapshot / SNAPSHOT_NAME
    if not snapshot.exists():
        raise PipelineError(f"no data snapshot at {snapshot}: run `emotion ingest` first")
    return versioning.content_hash(snapshot)


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"{path} is missing: {missing}")
    return json.loads(path.read_text())


def register_artifacts(cfg: Config, actor: str) -> promotion.PromotionResult:
    """Gate and promote the model that `emotion prepare/train/evaluate` left in artifacts/, as a new MLflow run.

    The behaviour suite runs here, on the model at hand (a behaviour.json on disk may belong to an older model).
    """
    from pipeline.model.calibration import CALIBRATION_FILE

    layout = Layout.of(cfg)
    prepared = PreparedData.load(layout.prepared)
    labels = prepared.label_map.labels
    metrics = _read_json(layout.root / evaluate.METRICS_FILE, "run `emotion evaluate` first")
    if missing := [label for label in labels if f"f1_{label}" not in metrics]:
        raise PipelineError(f"metrics.json has no scores for {missing}: run `emotion evaluate` on this model first")
    evaluate.load_predictions(
        layout.root / evaluate.PREDICTIONS_FILE, prepared.targets("test")
    )  # stale: fail before the run
    saved = _read_json(layout.model / CALIBRATION_FILE, "run `emotion train` first")
    calibration = {k: float(v) for k, v in saved.items() if isinstance(v, (int, float))}
    behaviour = behaviour_stage(cfg, prepared)
    mlflow_client = connection.client(cfg.registry)
    run_id = start_run(cfg, mlflow_client)
    status = "FAILED"
    try:
        lineage = lineage_of(cfg, data_hash_of(cfg), run_id)
        run_log.record(mlflow_client, run_id, run_log.Logged(tags=lineage, metrics=calibration))
        run_log.record(mlflow_client, run_id, evaluation_logged(metrics, behaviour))
        evaluated = evaluated_run(labels, metrics, behaviour, calibration, lineage, layout)
        result = gate_and_promote(cfg, evaluated, prepared, actor=actor)
        status = "FINISHED"
    finally:
        run_log.end_run(mlflow_client, run_id, status)
    return result
