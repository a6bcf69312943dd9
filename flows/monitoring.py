"""The drift-monitoring flow: score a batch with the champion, compare it with the reference, maybe retrain.

Thin Prefect wrappers over the steps in ``pipeline.monitoring``. One run = one drift check: the Evidently HTML report
and the verdict land in ``artifacts/monitoring/<stamp>-<batch>/``, in an MLflow run of ``monitor.experiment``, and in a
Prefect markdown artifact (key ``drift-check``). With ``monitor.trigger: on_drift`` a drift verdict starts the
training flow (a subflow, or a run of ``monitor.retrain_deployment``); the batch's labelled rows are merged into
the champion's data first. The training flow's gate decides promotion, as for any run.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import Config, load_config_from_env
from pipeline.errors import PipelineError
from pipeline.monitoring.batches import Batch, read_batch
from pipeline.monitoring.champion import Champion, champion_snapshot, load_champion
from pipeline.monitoring.descriptors import predictor_for, score_frame
from pipeline.monitoring.detection import detect_drift
from pipeline.monitoring.drift_run import log_drift_check
from pipeline.monitoring.merge import MergeResult, merge_labelled, retrain_overrides
from pipeline.monitoring.reference import Reference, build_reference, reference_key
from pipeline.monitoring.verdict import DriftVerdict

RETRY_DELAYS: list[float] = [2, 10, 30]  # seconds: tracking server or artifact store hiccups
ARTIFACT_KEY = "drift-check"


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed task unless it failed on a user error (a PipelineError says what to fix; retrying won't)."""
    try:
        state.result()
    except PipelineError:
        return False
    except Exception:
        return True
    return True


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _batch_name(batch: str | None) -> str:
    name = Path(str(batch)).stem if batch else "scheduled"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "batch"


def drift_run_name() -> str:
    """``drift-check-<batch>-<UTC stamp>``: what was checked and when, at a glance in the UI."""
    from prefect.runtime import flow_run

    return f"drift-check-{_batch_name(flow_run.parameters.get('batch'))}-{_stamp()}"


@task(
    name="load-champion",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=transient_only,
)
def champion_task(cfg: Config, workdir: str) -> Champion:
    return load_champion(cfg, Path(workdir))


@task(name="read-batch", cache_policy=NO_CACHE)
def read_batch_task(cfg: Config, source: str, labels: list[str]) -> Batch:
    return read_batch(source, cfg.data, labels, cfg.monitor, Path(cfg.project_dir).resolve())


def _reference_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return reference_key(parameters["cfg"], parameters["champion"])


@task(
    name="build-reference",
    cache_key_fn=_reference_cache_key,
    cache_expiration=timedelta(days=30),
    retries=2,
    retry_delay_seconds=RETRY_DELAYS[:2],
    retry_condition_fn=transient_only,
)
def reference_task(cfg: Config, champion: Champion) -> Reference:
    """The champion's reference data scored by the champion; cached per champion run, data and settings."""
    return build_reference(cfg, champion, predictor_for(cfg, champion.model_dir))


@task(name="score-batch", cache_policy=NO_CACHE)
def score_batch_task(cfg: Config, champion: Champion, batch: Batch) -> Any:
    return score_frame(predictor_for(cfg, champion.model_dir), batch.frame["text"].tolist())


@task(name="drift-report", cache_policy=NO_CACHE)
def report_task(
    cfg: Config, reference: Reference, scored: Any, batch: Batch, champion: Champion, out_dir: str
) -> DriftVerdict:
    return detect_drift(reference, scored, cfg.monitor, Path(out_dir), batch.describe(), champion.describe())


@task(
    name="log-to-mlflow",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=transient_only,
)
def log_task(cfg: Config, verdict: DriftVerdict, out_dir: str, run_name: str) -> str:
    return log_drift_check(cfg, verdict, Path(out_dir), run_name)


@task(name="merge-new-data", cache_policy=NO_CACHE)
def merge_task(cfg: Config, champion: Champion, batch: Batch, folder: str) -> MergeResult:
    base, provenance = champion_snapshot(cfg, champion)
    get_run_logger().info(
        "merging into champion v%s's data (%d rows, from %s)", champion.version, len(base), provenance
    )
    return merge_labelled(base, batch.frame, cfg.monitor.holdout_fraction, Path(folder))


def _publish(verdict: DriftVerdict, mlflow_run_id: str, retraining: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = [
        verdict.to_markdown(),
        "",
        f"MLflow run: `{mlflow_run_id}` (report under artifact path `drift/`)",
        "",
        "## Retraining",
        "",
        f"```json\n{json.dumps(retraining, indent=2, default=str)}\n```",
    ]
    create_markdown_artifact(
        "\n".join(lines),
        key=ARTIFACT_KEY,
        description=f"drift {'DETECTED' if verdict.drift else 'not detected'}: "
        f"{', '.join(verdict.drifted_features) or 'no feature drifted'}",
    )


def _override_items(data: dict[str, Any]) -> list[str]:
    """``--set`` items for a deployment run (values as JSON, which YAML parses back)."""
    return [f"data.{key}={json.dumps(value)}" for key, value in data.items()]


def _retrain(
    cfg: Config, champion: Champion, batch: Batch, name: str, stamp: str, overrides: list[str]
) -> dict[str, Any]:
    """Start the gated training flow on the champion's data plus the batch's labelled rows (if any)."""
    logger = get_run_logger()
    result: dict[str, Any] = {"triggered": True}
    train_cfg = cfg
    data_update: dict[str, Any] = {}
    if len(batch.labelled):
        merged = merge_task(cfg, champion, batch, str(cfg.path(cfg.monitor.merged_dir) / f"{stamp}-{name}"))
        result["merged"] = merged.describe()
        if sum(merged.added.values()):
            data_update = retrain_overrides(merged.folder, champion.labels)
            train_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data_update)})
        else:
            logger.info("every labelled row of the batch is already in the data: retraining on data.source as is")
    else:
        logger.info(
            "the batch has no labels in the champion's label set: retraining on data.source (%s) as is", cfg.data.source
        )
    result["data_source"] = train_cfg.data.source
    if cfg.monitor.retrain_deployment:
        from prefect.deployments import run_deployment

        parameters = {"overrides": list(overrides) + _override_items(data_update), "trigger": "drift"}
        run = run_deployment(
            cfg.monitor.retrain_deployment,
            parameters=parameters,
            timeout=0,
            flow_run_name=f"retrain-on-drift-{name}-{stamp}",
        )
        # prefect's async_dispatch types the call as `T | Coroutine[..., T]`; called from this sync flow it returns T
        assert not inspect.isawaitable(run)
        logger.info("drift: started deployment %s, flow run %s", cfg.monitor.retrain_deployment, run.id)
        return result | {"mode": "deployment", "deployment": cfg.monitor.retrain_deployment, "flow_run_id": str(run.id)}
    from flows.training import training_flow

    logger.info("drift: retraining on %s (subflow; the gate decides promotion)", train_cfg.data.source)
    summary = training_flow.with_options(flow_run_name=f"retrain-on-drift-{name}-{stamp}")(train_cfg)
    logger.info(
        "retraining registered version %s: gate %s, aliases %s",
        summary["version"],
        "passed" if summary["gate"]["passed"] else "FAILED",
        summary["aliases"],
    )
    return result | {
        "mode": "subflow",
        "run_id": summary["run_id"],
        "version": summary["version"],
        "gate_passed": summary["gate"]["passed"],
        "aliases": summary["aliases"],
        "champion_before": summary["champion_before"],
        "data_hash": summary["data_hash"],
    }


def _retraining_decision(drifted: bool, trigger: str) -> dict[str, Any]:
    """Whether this verdict retrains (``monitor.trigger``), and why or why not."""
    if not drifted:
        return {"triggered": False, "reason": "no drift"}
    if trigger == "on_drift":
        return {"triggered": True, "reason": "drift detected (monitor.trigger=on_drift)"}
    if trigger == "schedule_only":
        return {
            "triggered": False,
            "reason": "drift detected; monitor.trigger=schedule_only: retraining waits for the training schedule",
        }
    return {"triggered": False, "reason": "drift detected; monitor.trigger=off: no retraining"}


@flow(name="emotion-drift-check", flow_run_name=drift_run_name, log_prints=True)
def monitoring_flow(
    batch: str | None = None, params: str | None = None, overrides: list[str] | None = None, cfg: Config | None = None
) -> dict[str, Any]:
    """Check one batch of new texts for drift against the champion's reference; returns the verdict.

    ``batch`` is a file or folder in any supported data format (default ``monitor.batch_source``). The config is
    ``cfg`` if given, else ``params`` (default ./params.yaml) with ``overrides`` (``key=value`` items).
    """
    logger = get_run_logger()
    overrides = list(overrides or [])
    cfg = cfg or load_config_from_env(params, overrides)
    source = batch or cfg.monitor.batch_source
    if not source:
        raise PipelineError("nothing to check: pass a batch file or folder, or set monitor.batch_source")
    location = Path(str(source)).expanduser()
    if not (location if location.is_absolute() else Path(cfg.project_dir).resolve() / location).exists():
        raise PipelineError(f"batch {source} does not exist")  # before the champion is downloaded
    name, stamp = _batch_name(source), _stamp()
    out_dir = cfg.artifacts / "monitoring" / f"{stamp}-{name}"
    workdir = tempfile.mkdtemp(prefix="drift-champion-")
    reference_task_run = reference_task.with_options(result_storage=cfg.artifacts / "cache" / "prefect-results")
    try:
        champion = champion_task(cfg, workdir)
        current = read_batch_task(cfg, str(source), champion.labels)
        reference = reference_task_run(cfg, champion)
        logger.info("reference: %d rows (%s)", len(reference.frame), reference.provenance)
        scored = score_batch_task(cfg, champion, current)
        verdict = report_task(cfg, reference, scored, current, champion, str(out_dir))
        for reason in verdict.reasons:
            logger.info("verdict: %s", reason)
        mlflow_run_id = log_task(cfg, verdict, str(out_dir), f"drift-check-{name}-{stamp}")

        retraining = _retraining_decision(verdict.drift, cfg.monitor.trigger)
        try:
            if retraining["triggered"]:
                retraining |= _retrain(cfg, champion, current, name, stamp, overrides)
            else:
                logger.info("retraining: %s", retraining["reason"])
        finally:  # published even when retraining fails, so the check itself is never lost
            _publish(verdict, mlflow_run_id, retraining)
        return verdict.to_dict() | {"mlflow_run_id": mlflow_run_id, "retraining": retraining}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
