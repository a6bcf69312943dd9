"""`emotion serve --engine ray`: the API as a Ray Serve deployment on a real two-node Ray cluster (the
``ray_cluster`` fixture), two replicas over a temp sqlite registry, spoken to over real HTTP. It answers what the
local uvicorn server answers, both nodes serve, a killed replica is replaced while a steady stream of requests
goes on (a client that retries a couple of times sees no failure), and every replica follows the champion alias.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.config import Config, load_config
from pipeline.registry import connection, model_versions, run_log
from tests.conftest import PARAMS, classifier_folder, free_port
from tests.integration.test_serve import Server, wait_for
from tests.ray_cluster import RAY_ENV

pytestmark = pytest.mark.slow

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TEXTS = [
    "i feel wonderful today",
    "my hands are shaking before the exam and i cannot sleep",
    "ok",
    "i love my dog so much",
    "furious about the delay, again",
    "what a surprise to see you here",
]
# the client's retry budget, per request, on a connection error or a 5xx: a request in flight on a replica when it
# dies gets a 500 from Serve's proxy, which cannot know whether it ran, so leaves the retry to the client
RETRIES = 2


def register(cfg: Config, model_dir: Path) -> str:
    """Log ``model_dir`` on a fresh run and register it; returns the new version."""
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    return model_versions.register(cfg.registry, client, run_log.log_model(run_id, model_dir, LABELS), run_id, {}, "")


def set_champion(cfg: Config, version: str) -> None:
    model_versions.set_alias(cfg.registry, connection.client(cfg.registry), model_versions.CHAMPION, version)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory, learned_model_dir: Path) -> Config:
    """A project whose registry's champion is the tiny classifier (version 1); fp32, so both servers compute the
    same numbers; at most one replica per node, so two replicas must use both nodes."""
    project = tmp_path_factory.mktemp("ray-serve")
    config = load_config(
        PARAMS,
        [
            f"project_dir={project}",
            f"mlflow.lock_file={project}/mlflow/registry.lock",
            "serve.backend=torch-fp32",
            f"serve.port={free_port()}",
            "serve.refresh_seconds=1",
            "serve.ray_replicas=2",
            "serve.ray_max_replicas_per_node=1",
            "serve.access_log=false",
        ],
        environ={},
    )
    set_champion(config, register(config, learned_model_dir))
    return config


@pytest.fixture(scope="module")
def ray_api(cfg: Config, ray_cluster: str) -> Iterator[httpx.Client]:
    """The deployment on the cluster; Serve's app removed and this driver disconnected whatever happens."""
    from pipeline.serving.ray_serve import serve_on_ray, stop_on_ray

    with pytest.MonkeyPatch.context() as patch:
        for key in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "OMP_NUM_THREADS"):
            patch.setenv(key, RAY_ENV[key])
        try:
            url = serve_on_ray(cfg, ray_cluster)
            with httpx.Client(base_url=url, timeout=60) as http:
                yield http
        finally:
            stop_on_ray(started_ray=False)


def replicas_seen(http: httpx.Client, tries: int = 60) -> dict[str, dict[str, Any]]:
    """The replicas that answered ``GET /replica`` over ``tries`` requests, by actor name."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(tries):
        body = http.get("/replica").json()
        seen[body["actor"]] = body
    return seen


def test_answers_equal_the_local_servers(cfg: Config, ray_api: httpx.Client) -> None:
    with Server(cfg) as local, httpx.Client(base_url=local.url, timeout=60) as http:
        expected = http.post("/predict", json={"texts": TEXTS}).json()
    for _ in range(6):  # several requests, so both replicas answer some
        got = ray_api.post("/predict", json={"texts": TEXTS})
        assert got.status_code == 200, got.text
        body = got.json()
        assert (body["version"], body["backend"]) == ("1", "torch-fp32") == (expected["version"], expected["backend"])
        for mine, theirs in zip(body["predictions"], expected["predictions"], strict=True):
            assert mine["label"] == theirs["label"]
            for label in LABELS:
                assert mine["probabilities"][label] == pytest.approx(theirs["probabilities"][label], abs=1e-6)


def test_both_nodes_serve(ray_api: httpx.Client) -> None:
    import ray

    seen = replicas_seen(ray_api)
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(seen) == 2 and len(alive) == 2
    assert {replica["node_id"] for replica in seen.values()} == alive  # one replica on each node, both answered


@dataclass
class Stream:
    """Requests sent one after another by each of ``CLIENTS`` threads until stopped, each retried up to RETRIES
    times: several in flight at once, so some are on the replica when it dies."""

    url: str
    sent: int = 0
    retried: list[str] = field(default_factory=list)  # why each retry happened
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                with self.lock:
                    self.sent += 1
                self.one(http)
                time.sleep(0.01)

    def one(self, http: httpx.Client) -> None:
        for attempt in range(RETRIES + 1):
            try:
                response = http.post("/predict", json={"texts": TEXTS[:2]})
                problem = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                problem = repr(exc)
            if problem is None:
                return
            (self.retried if attempt < RETRIES else self.failed).append(problem)


CLIENTS = 4


def test_a_killed_replica_is_replaced_without_failed_requests(cfg: Config, ray_api: httpx.Client) -> None:
    before = replicas_seen(ray_api)
    victim = next(iter(before.values()))
    stream = Stream(str(ray_api.base_url))
    threads = [threading.Thread(target=stream.run, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: stream.sent >= 40, "the stream to get going", timeout=60)
        os.kill(victim["pid"], signal.SIGKILL)  # a crash: no graceful shutdown, requests in flight are lost
        sent_at_kill = stream.sent

        def replaced() -> dict[str, dict[str, Any]] | None:
            now = replicas_seen(ray_api, tries=20)
            return now if len(now) == 2 and victim["actor"] not in now else None

        after = wait_for(replaced, "Serve to replace the killed replica", timeout=120, every=1)
        assert stream.sent - sent_at_kill >= 40  # the stream went on through the outage
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert {r["node_id"] for r in after.values()} == {r["node_id"] for r in before.values()}  # both nodes again
    assert not stream.failed, stream.failed
    assert len(stream.retried) <= 5, stream.retried


def test_every_replica_follows_the_champion(
    cfg: Config, ray_api: httpx.Client, tmp_path: Path, tiny_model_dir: Path
) -> None:
    version = register(cfg, classifier_folder(tiny_model_dir, tmp_path / "v2", LABELS))
    set_champion(cfg, version)

    def all_new() -> bool:  # 20 answers in a row from the new version: both replicas switched
        return all(ray_api.post("/predict", json={"text": "fine"}).json()["version"] == version for _ in range(20))

    wait_for(all_new, f"both replicas to serve version {version}", timeout=60, every=0.5)
