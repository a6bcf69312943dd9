"""The parts of `emotion serve --workers N` that need no server: the cores divided among the workers, the port
bound once per worker (and refused when taken), and the reload generation the workers share."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.serving.processes import listening_sockets, worker_config
from pipeline.serving.siblings import WorkerContext, announce_reload, reloaded_everywhere, start_reload_watcher


@pytest.mark.parametrize(("cores", "workers", "threads"), [(8, 2, 4), (8, 3, 2), (2, 2, 1), (2, 4, 1), (1, 2, 1)])
def test_unset_threads_divide_the_cores_among_the_workers(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, threads: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    cfg = Config.model_validate({"serve": {"workers": workers}})
    assert worker_config(cfg).serve.threads == threads


def test_threads_set_by_the_user_are_kept_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    cfg = Config.model_validate({"serve": {"workers": 2, "threads": 3}})
    assert worker_config(cfg).serve.threads == 3


@pytest.mark.parametrize("workers", [0, -1, "two", 1.5])
def test_workers_must_be_a_whole_number_from_one(workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        Config.model_validate({"serve": {"workers": workers}})


def test_one_socket_per_worker_on_the_same_port_and_a_taken_port_refused() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 1)
    port = sockets[0].getsockname()[1]
    sockets[0].close()
    sockets = listening_sockets("127.0.0.1", port, 3)
    try:
        assert {s.getsockname() for s in sockets} == {("127.0.0.1", port)}
        for s in sockets:
            s.listen()  # as each worker's uvicorn does once it has loaded the champion
        with pytest.raises(PipelineError, match=f"cannot listen on 127.0.0.1:{port}: .*another server"):
            listening_sockets("127.0.0.1", port, 2)  # held by a group of this kind: not silently joined
    finally:
        for s in sockets:
            s.close()
    with socket.socket() as other:  # an ordinary server on the port
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(PipelineError, match="cannot listen"):
            listening_sockets("127.0.0.1", port, 2)


def wait_until(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_a_reload_announced_by_one_worker_is_checked_once_by_each(tmp_path: Path) -> None:
    workers = [WorkerContext(i, 3, tmp_path) for i in range(3)]
    checks = {i: 0 for i in range(3)}
    lock = threading.Lock()

    def check(index: int) -> None:
        with lock:
            checks[index] += 1

    stops = [start_reload_watcher(w, lambda i=w.index: check(i)) for w in workers]
    try:
        token = announce_reload(workers[0])  # after worker 0's own check (the route does it first)
        wait_until(lambda: reloaded_everywhere(workers[0], token) == 3, "every worker to check")
        time.sleep(0.5)  # a few more watch rounds: nobody checks the same generation twice
        assert checks == {0: 0, 1: 1, 2: 1}
        second = announce_reload(workers[2])
        wait_until(lambda: reloaded_everywhere(workers[2], second) == 3, "the second reload")
        assert checks == {0: 1, 1: 2, 2: 1}
    finally:
        for stop in stops:
            stop()


def test_a_worker_started_after_a_reload_does_not_repeat_it(tmp_path: Path) -> None:
    first = WorkerContext(0, 2, tmp_path)
    token = announce_reload(first)
    checked = threading.Event()
    stop = start_reload_watcher(WorkerContext(1, 2, tmp_path), checked.set)
    try:
        assert not checked.wait(0.6) and reloaded_everywhere(first, token) == 1
    finally:
        stop()
