"""MLflow tracking of scoring jobs: one run per job in ``score.experiment`` with rows, speed and label distribution."""

from __future__ import annotations

import logging

from pipeline.config import Config
from pipeline.scoring.job import ScoreSummary

log = logging.getLogger(__name__)


def log_scoring_run(cfg: Config, summary: ScoreSummary, run_name: str | None = None) -> str:
    """Log one scoring job; the run is tagged with the model and the files, so an output leads back to both."""
    from pipeline.registry import connection, run_log

    client = connection.client(cfg.registry)
    experiment_cfg = cfg.model_copy(
        update={"mlflow": cfg.mlflow.model_copy(update={"experiment": cfg.score.experiment})}
    )
    tags = {
        "model_name": summary.model_name,
        "model_version": summary.model_version,
        "output": summary.output,
        "inputs": ",".join(summary.inputs)[:5000],
    }
    run = client.create_run(connection.experiment_id(experiment_cfg.registry, client), run_name=run_name, tags=tags)
    run_id = run.info.run_id
    scored = max(summary.rows_scored, 1)
    metrics = {
        "rows_read": summary.rows_read,
        "rows": summary.rows_scored,
        "skipped_invalid": summary.skipped_invalid,
        "blank_records": summary.blank_records,
        "shards": summary.shards,
        "resumed_shards": summary.resumed_shards,
        "seconds": summary.seconds,
        "texts_per_second": summary.texts_per_second,
        **{f"label_share.{label}": count / scored for label, count in summary.label_counts.items()},
    }
    run_log.log_metrics(client, run_id, metrics)
    run_log.log_param_values(client, run_id, run_log.flatten(cfg.score.model_dump(), "score."))
    client.log_dict(run_id, summary.to_dict(), "scoring/summary.json")
    client.set_terminated(run_id, "FINISHED")
    log.info("scoring logged to MLflow run %s (experiment %s)", run_id, cfg.score.experiment)
    return run_id
