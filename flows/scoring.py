"""The batch-scoring flow: score a file, folder or glob with a registry model, log it, maybe check it for drift.

Thin Prefect wrappers over ``pipeline.scoring``. One run = one scoring job: the output file (resumable: a rerun
after a crash scores only the missing shards), an MLflow run in ``score.experiment`` (rows, label distribution,
seconds, texts/s, model version) and, with ``score.check_drift``, the drift check of ``flows.monitoring`` on the
same batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import Config, load_config_from_env
from pipeline.errors import PipelineError
from pipeline.scoring.job import ScoreSummary, score_files
from pipeline.scoring.scoring_run import log_scoring_run

RETRY_DELAYS: list[float] = [2, 10, 30]


def _batch_name(source: str) -> str:
    name = Path(source.replace("*", "all")).stem
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "batch"


def scoring_run_name() -> str:
    from prefect.runtime import flow_run

    source = str(flow_run.parameters.get("input") or "scheduled")
    return f"score-{_batch_name(source)}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@task(name="score-files", cache_policy=NO_CACHE)
def score_task(cfg: Config, source: str, output: str, model: str | None, engine: str) -> ScoreSummary:
    address = cfg.score.ray_address if engine == "ray" else None
    return score_files(cfg, [source], Path(output), model, engine=engine, address=address)


@task(name="log-to-mlflow", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS)
def log_task(cfg: Config, summary: ScoreSummary, run_name: str) -> str:
    return log_scoring_run(cfg, summary, run_name)


def _drift_check(cfg: Config, source: str) -> dict[str, Any]:
    """The drift check on the same batch (a file or folder; a glob has no single location to read)."""
    from flows.monitoring import monitoring_flow

    location = Path(source).expanduser()
    if not (location if location.is_absolute() else Path(cfg.project_dir).resolve() / location).exists():
        get_run_logger().info("score.check_drift: %s is a glob, not a file or folder; no drift check", source)
        return {"skipped": True, "reason": "the drift check reads a file or folder, not a glob"}
    verdict = monitoring_flow(batch=source, cfg=cfg)
    return {"drift": verdict["drift"], "mlflow_run_id": verdict["mlflow_run_id"]}


@flow(name="emotion-batch-score", flow_run_name=scoring_run_name, log_prints=True)
def scoring_flow(
    input: str | None = None,
    output: str | None = None,
    model: str | None = None,
    engine: str | None = None,
    params: str | None = None,
    overrides: list[str] | None = None,
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Score ``input`` (default ``score.batch_source``) into ``output`` (default a stamped Parquet file in
    ``score.output_dir``) with ``model`` (default the champion); returns the summary and the MLflow run id."""
    logger = get_run_logger()
    cfg = cfg or load_config_from_env(params, overrides)
    source = input or cfg.score.batch_source
    if not source:
        raise PipelineError("nothing to score: pass an input file, folder or glob, or set score.batch_source")
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    target = output or str(cfg.path(cfg.score.output_dir) / f"{stamp}-{_batch_name(source)}.parquet")
    summary = score_task(cfg, source, target, model, engine or cfg.score.engine)
    logger.info(
        "scored %d texts (%d skipped) with %s v%s in %.1fs (%.0f texts/s) -> %s",
        summary.rows_scored,
        summary.skipped_invalid,
        summary.model_name,
        summary.model_version,
        summary.seconds,
        summary.texts_per_second,
        summary.output,
    )
    result = summary.to_dict() | {"mlflow_run_id": log_task(cfg, summary, f"score-{_batch_name(source)}-{stamp}")}
    if cfg.score.check_drift:
        result["drift_check"] = _drift_check(cfg, source)
    return result
