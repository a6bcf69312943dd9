"""The flow against a real `mlflow server` over HTTP, and `mlflow models serve` answering from the registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN, free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], log: Path, health: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_http(health, proc, log)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL it if it has not gone in 30 s (a loaded machine is slow to exit)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def env() -> dict[str, str]:
    return os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}  # both servers start uvicorn from PATH


@pytest.fixture
def tracking_server(tmp_path: Path, env: dict[str, str]):
    port = free_port()
    proc = start(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / "server.log",
        f"http://127.0.0.1:{port}/health",
        env,
    )
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.mark.fresh_registry  # it checks that no local store is made
def test_flow_registers_through_server_and_models_serve_answers_calibrated(
    tracking_server: str, tiny_config, tmp_path: Path, env: dict[str, str]
) -> None:
    from flows.training import training_flow
    from mlflow import MlflowClient
    from pipeline.model.calibration import load_temperature
    from pipeline.model.inference import predict_logits, softmax
    from pipeline.model.predict import Predictor
    from pipeline.registry import connection, run_log

    summary = training_flow(tiny_config(f"mlflow.tracking_uri={tracking_server}", "train.learning_rate=1e-2"))

    client = MlflowClient(tracking_server)
    champion = client.get_model_version_by_alias("emotion-classifier", "champion")
    assert str(champion.version) == summary["version"] == "1"
    assert client.get_run(summary["run_id"]).info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    assert not (Path(tiny_config().project_dir) / "mlflow" / "mlflow.db").exists()  # nothing tracked locally

    port = free_port()
    serve = start(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/emotion-classifier@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / "serve.log",
        f"http://127.0.0.1:{port}/ping",
        env | {"MLFLOW_TRACKING_URI": tracking_server, "MLFLOW_REGISTRY_URI": tracking_server},
    )
    try:
        texts = ["i feel wonderful today", "the dark alley scares me"]
        body = json.dumps({"dataframe_records": [{"text": t} for t in texts]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        stop(serve)

    connection.client(tiny_config(f"mlflow.tracking_uri={tracking_server}").registry)
    folder = run_log.download_model("models:/emotion-classifier@champion", tmp_path / "champion")
    temperature = load_temperature(folder)
    assert temperature != pytest.approx(1.0, abs=1e-3)  # a fitted temperature travels with the model
    predictor = Predictor(folder)
    raw = predict_logits(
        predictor.model, predictor.tokenizer, texts, predictor.runtime, predictor.max_length, predictor.batch_size
    )
    expected = softmax(raw / temperature)
    labels = predictor.labels
    got = np.array([[row[f"prob_{label}"] for label in labels] for row in served])
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert [row["label"] for row in served] == [labels[i] for i in expected.argmax(axis=1)]
