"""A real `prefect server` on a loopback port: deploy prefect.yaml, serve with `emotion schedule`, run through the API.

1. `prefect deploy --all` creates both deployments from prefect.yaml on a process work pool, with their crons.
2. `emotion schedule` serves the same deployments (it replaces them with served ones) until interrupted.
3. With a champion in place (trained in-process against the same server), a run of the drift-check deployment
   started through the API on a shifted, labelled batch finds drift and retrains through the gate, which
   (relaxed here) promotes the new version.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.registry import connection, model_versions
from tests.conftest import BIN, PARAMS, REPO, default_sigint, init_project, tiny_overrides
from tests.servers import WAIT_SECONDS, run_and_wait, stop, wait_for

pytestmark = pytest.mark.slow


def sample_batch(path: Path) -> Path:
    """The shipped sample's test texts, labelled, written like social media posts: a shifted batch."""
    from pipeline.data.ingest import sample_data_dir

    rows = []
    for i, line in enumerate((sample_data_dir() / "test.txt").read_text().splitlines()):
        text, _, label = line.rpartition(";")
        rows.append(f"{text.upper()}!!! 🎉 http://t.co/s{i} @fan{i};{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_deployments_on_a_real_server(
    prefect_server, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, env = prefect_server
    cfg_defaults = load_config(PARAMS, [], environ={})

    # 1. prefect.yaml onto a process work pool
    prefect_yaml = (REPO / "prefect.yaml").read_bytes()
    for command in (
        ["work-pool", "create", "emotion-process", "--type", "process"],
        ["--no-prompt", "deploy", "--all"],
    ):
        done = subprocess.run(
            [str(BIN / "prefect"), *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_SECONDS
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (REPO / "prefect.yaml").read_bytes() == prefect_yaml
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        weekly = client.read_deployment_by_name("emotion-retrain/weekly")
        daily = client.read_deployment_by_name("emotion-drift-check/daily")
        assert weekly.work_pool_name == daily.work_pool_name == "emotion-process"
        assert [s.schedule.cron for s in weekly.schedules] == [cfg_defaults.monitor.training_cron]
        assert [s.schedule.cron for s in daily.schedules] == [cfg_defaults.monitor.drift_cron]
        assert weekly.entrypoint == "flows/deployments.py:retrain_flow" and weekly.parameters["params"] == "params.yaml"
        assert "{{ $EMOTION_PROJECT_DIR }}" in str(weekly.pull_steps)

    # 2. `emotion schedule` serves them in a project of its own
    project = init_project(tmp_path / "project")
    overrides = tiny_overrides(
        project,
        tiny_model_dir,
        "monitor.embedding_plot=false",
        "monitor.min_batch_rows=30",
        "monitor.reference_splits=[train, validation]",
        "gate.max_regression=1.0",
        "gate.max_class_regression=1.0",
        "train.epochs=1",
        f"monitor.batch_source={tmp_path / 'incoming'}",
    )
    args = [str(BIN / "emotion"), "schedule", "--config", str(PARAMS)]
    for item in overrides:
        args += ["--set", item]
    log = tmp_path / "schedule.log"
    with log.open("w") as out:
        serving = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            served = wait_for(
                "the served deployments",
                lambda: all(
                    client.read_deployment_by_name(name).parameters.get("overrides") == overrides
                    for name in ("emotion-retrain/weekly", "emotion-drift-check/daily")
                ),
                serving,
                log,
            )
            assert served
            daily = client.read_deployment_by_name("emotion-drift-check/daily")
            assert [s.schedule.cron for s in daily.schedules] == ["0 6 * * *"]  # from params.yaml

            # 3. a champion, then a drift-check run through the API
            from flows.deployments import retrain_flow

            cfg = load_config(PARAMS, overrides, environ={})
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the flow reads the environment
            assert retrain_flow(str(PARAMS), overrides, trigger="manual")["version"] == "1"
            assert (
                str(model_versions.version_by_alias(cfg.registry, connection.client(cfg.registry), "champion").version)
                == "1"
            )

            batch = sample_batch(tmp_path / "posts.txt")
            run_and_wait(client, "emotion-drift-check/daily", {"batch": str(batch)}, log, serving)
            retrains = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="retrain-on-drift-posts"))
            )
            assert len(retrains) == 1 and retrains[0].state.is_completed()
            artifacts = client.read_artifacts()
            assert any(a.key == "drift-check" and "DRIFT DETECTED" in str(a.data) for a in artifacts)
    finally:
        code = stop(serving, signal.SIGINT)
    assert code == 0, log.read_text()[-3000:]

    mlflow_client = connection.client(cfg.registry)
    v2 = mlflow_client.get_model_version("emotion-classifier", "2")
    assert v2.tags["gate"] == "passed" and Path(v2.tags["data_source"]).is_relative_to(project / "artifacts" / "merged")
    assert (
        str(model_versions.version_by_alias(cfg.registry, mlflow_client, "champion").version) == "2"
    )  # passed: promoted
    reports = list((project / "artifacts" / "monitoring").glob("*-posts/drift_report.html"))
    assert len(reports) == 1
