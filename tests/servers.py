"""Helpers for tests that start real servers as subprocesses (Prefect server, workers, served deployments)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, free_port

WAIT_SECONDS = 600  # upper bound for a server start or a flow run on a busy 2-core machine (a hang guard only)


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], Any], process: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``check`` until it returns something truthy; fail with the log's tail if ``process`` exits first."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if process is not None and process.poll() is not None:
            pytest.fail(
                f"{what}: the process exited with {process.returncode}\n{log.read_text()[-3000:] if log else ''}"
            )
        time.sleep(1.0)
    pytest.fail(f"gave up waiting for {what}\n{log.read_text()[-3000:] if log else ''}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the process; SIGKILL its process group if it has not exited within a minute."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` (sqlite in ``home``) on a free loopback port: its API URL and a client environment."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # mlflow.set_tracking_uri (connection.client) exports MLFLOW_TRACKING_URI: keep earlier tests' stores out
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for("the Prefect server", lambda: healthy(api_url), server, log)
        yield api_url, env | {"PREFECT_API_URL": api_url}
    finally:
        stop(server)


def run_and_wait(client: Any, deployment: str, parameters: dict, log: Path, process: subprocess.Popen) -> Any:
    """Start a run of ``deployment`` through the API and wait until it is final; it must have completed."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    final = wait_for(
        f"{deployment} run {flow_run.id}",
        lambda: (lambda r: r if r.state and r.state.is_final() else None)(client.read_flow_run(flow_run.id)),
        process,
        log,
    )
    assert final.state.is_completed(), f"{deployment}: {final.state}\n{log.read_text()[-4000:]}"
    return final
