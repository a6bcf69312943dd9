"""MLflow tracking of drift checks: one run per check in ``monitor.experiment``, linked to the champion it judged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.monitoring.verdict import DriftVerdict

log = logging.getLogger(__name__)


def _champion_run_id(cfg: Config, mlflow_client: Any, champion: dict[str, Any]) -> str | None:
    """The training run of the champion version the verdict names, as its registry model version records it."""
    from mlflow.exceptions import MlflowException

    version = champion.get("version")
    if version is None:
        return None
    name = champion.get("name") or cfg.mlflow.registered_model
    try:
        return mlflow_client.get_model_version(name, str(version)).run_id
    except MlflowException as exc:
        raise PipelineError(
            f"the drift verdict names {name} version {version}, which the registry at "
            f"{cfg.tracking_uri} does not have: check mlflow.registered_model and the "
            "tracking URI"
        ) from exc


def log_drift_check(cfg: Config, verdict: DriftVerdict, out_dir: Path, run_name: str | None = None) -> str:
    """One MLflow run per check in ``monitor.experiment``: scores as metrics, report and verdict as artifacts.

    The run is tagged with the champion's version and training run, so a check leads back to the model it judged.
    """
    from pipeline.registry import connection, run_log

    client = connection.client(cfg.registry)
    experiment_cfg = cfg.model_copy(
        update={"mlflow": cfg.mlflow.model_copy(update={"experiment": cfg.monitor.experiment})}
    )
    tags = {
        "drift": str(verdict.drift).lower(),
        "drifted_features": ",".join(verdict.drifted_features),
        "champion_version": verdict.champion.get("version"),
        "champion_run_id": _champion_run_id(cfg, client, verdict.champion),
        "data_hash": verdict.champion.get("data_hash"),
        "batch_source": verdict.batch.get("source"),
        "reference_provenance": verdict.reference.get("provenance"),
    }
    run = client.create_run(
        connection.experiment_id(experiment_cfg.registry, client),
        run_name=run_name,
        tags={k: str(v)[:5000] for k, v in tags.items() if v is not None},
    )
    run_id = run.info.run_id
    run_log.log_metrics(
        client,
        run_id,
        {
            **{f"drift_score.{f.name}": f.score for f in verdict.features},
            "drifted_share": verdict.drifted_share,
            "drift": float(verdict.drift),
            "batch_rows": verdict.batch.get("rows", 0),
            "reference_rows": verdict.reference.get("rows", 0),
        },
    )
    run_log.log_param_values(client, run_id, run_log.flatten(cfg.monitor.model_dump(), "monitor."))
    for name in ("drift_report.html", "verdict.json"):
        if (out_dir / name).exists():
            client.log_artifact(run_id, str(out_dir / name), "drift")
    client.set_terminated(run_id, "FINISHED")
    log.info("drift check logged to MLflow run %s (experiment %s)", run_id, cfg.monitor.experiment)
    return run_id
