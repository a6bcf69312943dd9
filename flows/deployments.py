"""Deployments: scheduled retraining and the scheduled drift check, served with one command.

``emotion schedule`` (or ``make serve-flows``) builds both deployments from ``params.yaml`` (crons in
``monitor.training_cron`` / ``monitor.drift_cron``) and serves them against the Prefect API in
``PREFECT_API_URL``; with none set it uses (or starts) a local ``prefect server`` on 127.0.0.1. ``prefect.yaml``
declares the same two deployments for ``prefect deploy`` onto a work pool (see the README).

| deployment | flow | schedule |
|---|---|---|
| ``emotion-retrain/weekly`` | ``retrain_flow`` -> ``flows.training.training_flow`` | ``monitor.training_cron`` |
| ``emotion-drift-check/daily`` | ``flows.monitoring.monitoring_flow`` | ``monitor.drift_cron`` |
| ``emotion-batch-score/batch`` | ``flows.scoring.scoring_flow`` | ``score.cron`` (with ``score.batch_source``) |
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger

from flows.monitoring import monitoring_flow
from flows.scoring import scoring_flow
from pipeline.config import load_config_from_env
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger(__name__)

TRAINING_FLOW = "emotion-retrain"
DRIFT_FLOW = "emotion-drift-check"
TRAINING_DEPLOYMENT = "weekly"
DRIFT_DEPLOYMENT = "daily"
SCORING_DEPLOYMENT = "batch"
LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 4200


def retrain_run_name() -> str:
    from prefect.runtime import flow_run

    return f"retrain-{flow_run.parameters.get('trigger', 'schedule')}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name=TRAINING_FLOW, flow_run_name=retrain_run_name, log_prints=True)
def retrain_flow(
    params: str | None = None, overrides: list[str] | None = None, trigger: str = "schedule"
) -> dict[str, Any]:
    """Retrain on the configured data through the usual gate (the deployment entry point of the training flow).

    ``trigger`` says who asked: ``schedule`` (the cron; skipped when ``monitor.trigger`` is ``off``), ``drift``
    (a drift check), or ``manual``.
    """
    from flows.training import training_flow

    logger = get_run_logger()
    cfg = load_config_from_env(params, overrides)
    if trigger == "schedule" and cfg.monitor.trigger == "off":
        logger.info("monitor.trigger=off: scheduled retraining is switched off, nothing to do")
        return {"skipped": True, "reason": "monitor.trigger=off"}
    logger.info("retraining (%s) on %s", trigger, cfg.data.source)
    return training_flow(cfg)


def build_deployments(params: str | Path | None = None, overrides: list[str] | None = None) -> list[RunnerDeployment]:
    """The runner deployments, with the crons and parameters of this params file and overrides."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    params_path = str(Path(params or "params.yaml").resolve())
    overrides = list(overrides or [])
    cfg = load_config_from_env(params_path, overrides)
    mcfg = cfg.monitor
    training_cron = mcfg.training_cron if mcfg.trigger != "off" else None
    drift_cron = mcfg.drift_cron if mcfg.batch_source else None
    if mcfg.drift_cron and not mcfg.batch_source:
        log.warning(
            "monitor.batch_source is not set: the drift check is served without its schedule; run it on "
            "demand with a batch parameter, or set monitor.batch_source to the folder new texts land in"
        )
    training = retrain_flow.to_deployment(
        TRAINING_DEPLOYMENT,
        schedules=[Cron(training_cron, timezone=mcfg.timezone)] if training_cron else None,
        parameters={"params": params_path, "overrides": overrides, "trigger": "schedule"},
        description="Retrain the emotion classifier on data.source; the gate decides promotion.",
        tags=["emotion", "training"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        concurrency_limit=1,
    )
    drift = monitoring_flow.to_deployment(
        DRIFT_DEPLOYMENT,
        schedules=[Cron(drift_cron, timezone=mcfg.timezone)] if drift_cron else None,
        parameters={"params": params_path, "overrides": overrides},
        description="Check monitor.batch_source (or the batch parameter) for drift against the champion's "
        f"reference; on drift: monitor.trigger={mcfg.trigger}.",
        tags=["emotion", "monitoring"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        concurrency_limit=1,
    )
    score_cron = cfg.score.cron if cfg.score.batch_source else None
    scoring = scoring_flow.to_deployment(
        SCORING_DEPLOYMENT,
        schedules=[Cron(score_cron, timezone=mcfg.timezone)] if score_cron else None,
        parameters={"params": params_path, "overrides": overrides},
        description="Score score.batch_source (or the input parameter) with the champion (or the model parameter).",
        tags=["emotion", "scoring"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        concurrency_limit=1,
    )
    # prefect's async_dispatch types the call as `T | Coroutine[..., T]`; called from sync code it returns T
    assert not inspect.isawaitable(training) and not inspect.isawaitable(drift)
    assert not inspect.isawaitable(scoring)
    return [training, drift, scoring]


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def prefect_api(port: int = LOCAL_PORT, startup_timeout: float = 120.0) -> Iterator[str]:
    """The Prefect API to serve against: ``PREFECT_API_URL`` if set, else a local server (started if not running).

    A server started here is stopped on exit. Scheduling needs a real server: the temporary one Prefect starts
    for a single flow run has no scheduler.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    url = f"http://{LOCAL_HOST}:{port}/api"
    process = None
    if not _healthy(url):
        log.info("starting a local Prefect server on %s:%d (stopped when this command ends)", LOCAL_HOST, port)
        prefect_bin = Path(sys.executable).with_name("prefect")
        command = [
            str(prefect_bin) if prefect_bin.exists() else "prefect",
            "server",
            "start",
            "--host",
            LOCAL_HOST,
            "--port",
            str(port),
        ]
        process = subprocess.Popen(
            command,
            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise PipelineError(
                    f"`prefect server start` exited with code {process.returncode}: is port {port} "
                    "taken? Set PREFECT_API_URL to a running server or pick another --port"
                )
            if time.monotonic() > deadline:
                process.terminate()
                raise PipelineError(f"the Prefect server did not answer on {url} within {startup_timeout:.0f}s")
            time.sleep(1.0)
    else:
        log.info("using the Prefect server already running on %s", url)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def serve(params: str | Path | None = None, overrides: list[str] | None = None, port: int = LOCAL_PORT) -> None:
    """Serve both deployments on their schedules until interrupted (Ctrl-C or SIGTERM).

    ``kill -USR1 <pid>`` writes every thread's stack to stderr, to see where a scheduler waits.
    """
    import faulthandler
    import signal

    from prefect import serve as prefect_serve
    from prefect.client.schemas.schedules import CronSchedule

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        with prefect_api(port) as api_url:
            deployments = build_deployments(params, overrides)
            for d in deployments:
                cron_schedules = [s.schedule for s in d.schedules or [] if isinstance(s.schedule, CronSchedule)]
                crons = ", ".join(s.cron for s in cron_schedules) or "no schedule (runs on demand)"
                log.info("serving %s/%s: %s", d.flow_name, d.name, crons)
            log.info("Prefect API %s; stop with Ctrl-C", api_url)
            prefect_serve(*deployments, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        faulthandler.unregister(signal.SIGUSR1)
    log.info("stopped serving")


if __name__ == "__main__":  # python -m flows.deployments [params.yaml]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(sys.argv[1] if len(sys.argv) > 1 else None)
