"""The training deployment of prefect.yaml, run by a `prefect worker` on a process work pool.

A real Prefect server; `prefect work-pool create --type process` and `prefect deploy` of the repository's
prefect.yaml (the weekly retraining); a worker started as the docs say (EMOTION_PROJECT_DIR = the checkout); a run
triggered through the API with a temp project and the tiny model as overrides completes in the worker's own
process and registers a champion in that project's MLflow store.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, init_project, tiny_overrides
from tests.servers import WAIT_SECONDS, run_and_wait, stop

pytestmark = pytest.mark.slow

POOL = "emotion-process"  # the pool prefect.yaml names


def prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_a_worker_on_the_process_pool_runs_the_training_deployment(
    prefect_server, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mlflow import MlflowClient

    api_url, env = prefect_server
    env = env | {"EMOTION_PROJECT_DIR": str(REPO)}
    prefect(env, "work-pool", "create", POOL, "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--name", "weekly")

    project = init_project(tmp_path / "project")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "test-worker"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            parameters = {"overrides": tiny_overrides(project, tiny_model_dir, "train.epochs=1"), "trigger": "manual"}
            run = run_and_wait(client, "emotion-retrain/weekly", parameters, log, worker)
            assert run.work_pool_name == POOL
            assert [w.name for w in client.read_workers_for_work_pool(POOL)] == ["test-worker"]
    finally:
        stop(worker)
    assert f"Worker 'test-worker' submitting flow run '{run.id}'" in log.read_text()

    store = f"sqlite:///{project}/mlflow/mlflow.db"  # the registry too: an earlier test may have set another
    mlflow_client = MlflowClient(tracking_uri=store, registry_uri=store)
    champion = mlflow_client.get_model_version_by_alias("emotion-classifier", "champion")
    assert str(champion.version) == "1" and champion.tags["gate"] == "passed"
    assert mlflow_client.get_run(champion.run_id).data.params["project_dir"] == str(project)
