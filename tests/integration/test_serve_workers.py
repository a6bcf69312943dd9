"""`emotion serve --workers 2` over real HTTP: two server processes on one loopback port, each answering like the
single-process server, a reload that reaches both, metrics that add up across them, and a clean stop (no process
left behind, also when the parent is killed); a taken port and a worker that cannot start are one line each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.registry import model_versions
from tests.conftest import BIN, free_port, init_project, tiny_overrides
from tests.integration.test_serve import (
    MAX_TEXTS,
    SHADOW_TEXTS,
    Server,
    metric,
    registered_registry,
    scrape,
    serve_config,
    wait_for,
)

pytestmark = pytest.mark.slow

WORKERS = 2
CONNECTIONS = 24  # fresh connections per check: the kernel spreads them by hash; all on one worker: 2**-23


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def start_serve(
    project: Path, tiny_model_dir: Path, log: Path, *extra: str, port: int | None = None, tmp: Path | None = None
) -> Served:
    """`emotion serve --workers 2` on a free port (the registry's fp32 model, no periodic champion check);
    ``tmp``: its temporary folder (TMPDIR), to see what it leaves there."""
    port = port or free_port()
    sets = tiny_overrides(project, tiny_model_dir, "serve.backend=torch-fp32", "serve.refresh_seconds=0", *extra)
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which would point the server at another test's store
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONUNBUFFERED": "1"}
    env |= {"TMPDIR": str(tmp)} if tmp is not None else {}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "emotion"), "serve", "--port", str(port), "--workers", str(WORKERS)]
            + [f"--set={item}" for item in sets],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Served(proc, f"http://127.0.0.1:{port}", log)


def wait_answering(served: Served, status: int = 200) -> None:
    """Until the parent says every worker answers, and /health answers ``status``."""

    def up() -> bool:
        assert served.proc.poll() is None, served.output()
        if f"{WORKERS} server processes answering on {served.url}" not in served.output():
            return False
        try:
            return httpx.get(f"{served.url}/health", timeout=10).status_code == status
        except httpx.TransportError:
            return False

    wait_for(up, "emotion serve --workers to answer", timeout=240, every=0.5)


def on_fresh_connections(url: str, path: str, body: dict[str, Any] | None = None) -> list[tuple[int, Any]]:
    """``CONNECTIONS`` times: a new connection, the request, then ``GET /worker`` on the same connection (so the
    same process); the answering process's id beside each answer."""
    found = []
    for _ in range(CONNECTIONS):
        with httpx.Client(base_url=url, timeout=60) as http:
            answer = http.post(path, json=body) if body is not None else http.get(path)
            assert answer.status_code in (200, 503), answer.text
            found.append((http.get("/worker").json()["pid"], answer.json()))
    return found


def stopped(served: Served, sig: int, worker_pids: set[int]) -> str:
    """Send ``sig`` to the parent; its exit status is 0 and no worker outlives it."""
    served.proc.send_signal(sig)
    served.proc.wait(timeout=120)
    output = served.output()
    assert served.proc.returncode == 0, output
    assert not [pid for pid in worker_pids if alive(pid)], output
    return output


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it has stopped)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, learned_model_dir: Path) -> dict[str, Any]:
    return registered_registry(tmp_path_factory.mktemp("workers"), tiny_model_dir, learned_model_dir)


@pytest.fixture(scope="module")
def workers(store: dict[str, Any], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_serve(store["project"], tiny_model_dir, tmp_path_factory.mktemp("workers-log") / "serve.log")
    try:
        wait_answering(served)
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=60)


def test_every_worker_answers_as_the_single_process_server(
    workers: Served, store: dict[str, Any], tiny_model_dir: Path
) -> None:
    body = {"texts": SHADOW_TEXTS[:MAX_TEXTS]}  # within serve_config's limit, for the single-process server
    answers = on_fresh_connections(workers.url, "/predict", body)
    assert len({pid for pid, _ in answers}) == WORKERS  # both processes answered
    with Server(serve_config(store["project"], tiny_model_dir, "serve.backend=torch-fp32")) as single:
        response = httpx.post(f"{single.url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    expected = response.json()
    for _, answer in answers:
        assert answer["version"] == expected["version"] == "1" and answer["backend"] == "torch-fp32"
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected["predictions"]]
        for got, want in zip(answer["predictions"], expected["predictions"]):
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)


def test_each_worker_gets_its_share_of_the_cores(workers: Served) -> None:
    infos = {info["pid"]: info for _, info in on_fresh_connections(workers.url, "/worker")}
    assert sorted(info["index"] for info in infos.values()) == list(range(WORKERS))
    assert {info["torch_threads"] for info in infos.values()} == {max(1, (os.cpu_count() or 1) // WORKERS)}


def test_metrics_add_up_across_workers(workers: Served) -> None:
    def served_predictions() -> float:
        with httpx.Client(base_url=workers.url, timeout=60) as http:
            return (
                metric(scrape(http), "emotion_http_requests_total", route="/predict", method="POST", status="200") or 0
            )

    before = served_predictions()
    answers = on_fresh_connections(workers.url, "/predict", {"text": "i feel wonderful today"})
    assert len({pid for pid, _ in answers}) == WORKERS
    assert served_predictions() - before == CONNECTIONS


def test_one_reload_brings_every_worker_to_the_new_champion(workers: Served, store: dict[str, Any]) -> None:
    """serve.refresh_seconds is 0 here: only the reload can move the workers."""
    model_versions.set_alias(store["cfg"].registry, store["client"], model_versions.CHAMPION, "2")
    try:
        reloaded = httpx.post(f"{workers.url}/reload", timeout=120).json()
        assert reloaded["version"] == "2" and reloaded["workers"] == {"checked": WORKERS, "of": WORKERS}, reloaded
        answers = on_fresh_connections(workers.url, "/predict", {"text": "i am scared of the dark"})
        assert len({pid for pid, _ in answers}) == WORKERS
        assert {answer["version"] for _, answer in answers} == {"2"}
    finally:
        model_versions.set_alias(store["cfg"].registry, store["client"], model_versions.CHAMPION, "1")
        httpx.post(f"{workers.url}/reload", timeout=120)


def test_sigterm_stops_every_worker(workers: Served) -> None:
    pids = {pid for pid, _ in on_fresh_connections(workers.url, "/worker")}
    output = stopped(workers, signal.SIGTERM, pids)
    assert "2 server processes answering on" in output and "Traceback" not in output


def test_without_a_champion_every_worker_waits_and_a_killed_parent_leaves_none(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """No champion is no failure (503, as one process does); Ctrl-C stops all; SIGKILL of the parent too."""
    project = init_project(tmp_path / "empty")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    started: list[Served] = []
    try:
        started.append(served := start_serve(project, tiny_model_dir, tmp_path / "serve.log", tmp=tmp))
        wait_answering(served, status=503)
        answers = on_fresh_connections(served.url, "/predict", {"text": "anyone there?"})
        assert {answer["detail"] for _, answer in answers} == {
            "no version of emotion-classifier has the alias 'champion' yet"
        }
        pids = {pid for pid, _ in answers}
        assert len(pids) == WORKERS
        assert "Traceback" not in stopped(served, signal.SIGINT, pids)
        assert not list(tmp.glob("emotion-serve-workers-*"))  # the shared folder (metrics, reloads) is deleted

        started.append(again := start_serve(project, tiny_model_dir, tmp_path / "again.log", tmp=tmp))
        wait_answering(again, status=503)
        pids = {pid for pid, _ in on_fresh_connections(again.url, "/worker")}
        again.proc.kill()  # SIGKILL: the parent cannot pass anything on; the workers notice it is gone
        again.proc.wait(timeout=60)
        wait_for(lambda: not any(alive(pid) for pid in pids), "the workers of a killed parent to stop", timeout=60)
        assert not list(tmp.glob("emotion-serve-workers-*"))  # deleted by a worker, the parent could not
    finally:
        for each in started:
            if each.proc.poll() is None:
                each.proc.kill()


def test_a_taken_port_is_one_line_and_nothing_starts(
    store: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = start_serve(store["project"], tiny_model_dir, tmp_path / "serve.log", port=port)
        served.proc.wait(timeout=120)
    output = served.output()
    assert served.proc.returncode == 2, output
    [error] = [line for line in output.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "in use" in error, output
    assert "Traceback" not in output and "server processes answering" not in output


def test_a_worker_that_cannot_start_is_reported_once(
    store: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocker}/mlflow.db"
    served = start_serve(store["project"], tiny_model_dir, tmp_path / "serve.log", f"mlflow.tracking_uri={uri}")
    served.proc.wait(timeout=240)
    output = served.output()
    assert served.proc.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "FileExistsError" in errors[0] and str(blocker) in errors[0], output
    assert "Traceback" not in output
