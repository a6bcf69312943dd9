"""Fault injection with real processes: `emotion run` and `emotion serve` killed with SIGKILL at each fault point.

Each point in ``pipeline.ops.faults.POINTS`` is reached by a real process started with ``EMOTION_FAULT_POINT``
set; when it writes its marker the test kills its whole process group with SIGKILL and checks that nothing was
lost: the champion loads, every registered version has its model, ``data/`` and ``data.dvc`` hold a valid
snapshot (also in the DVC cache and remote), no version or snapshot that existed before is gone, and a rerun
without the fault succeeds. The serve point kills the server during a hot reload and starts it again.

One project is shared by the whole module (a clean run first gives it a champion to protect). Each fault runs
``EMOTION_FAULT_REPEATS`` times (default 1); docs/reliability.md has the table from repeated runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.ops.faults import MARKER_VARIABLE, POINT_VARIABLE, POINTS
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import BIN, PARAMS, default_sigint, free_port, init_project, tiny_overrides
from tests.servers import stop, wait_for

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
REPEATS = int(os.environ.get("EMOTION_FAULT_REPEATS", "1"))
RUN_SECONDS = 600  # a hang guard for one `emotion run` on a busy machine


@dataclass
class Lab:
    """The shared project, its settings and the environment its processes run with."""

    project: Path
    model_dir: Path
    env: dict[str, str]
    logs: Path
    started: int = field(default=0)
    checked: State | None = None  # the state the last test left and checked; nothing runs between tests

    def state(self) -> State:
        """The state to protect: the last test's checked state, or (a test run alone) checked now."""
        return self.checked or check(self.config())

    def overrides(self, *extra: str) -> list[str]:
        return tiny_overrides(self.project, self.model_dir, "train.epochs=1", "serve.backend=torch-fp32", *extra)

    def sets(self, *extra: str) -> list[str]:
        return [f"--set={item}" for item in self.overrides(*extra)]

    def config(self) -> Any:
        from pipeline.config import load_config

        return load_config(PARAMS, self.overrides(), environ={})

    def log(self, name: str) -> Path:
        self.started += 1
        return self.logs / f"{self.started:02d}-{name}.log"

    def run(self) -> dict[str, Any]:
        """`emotion run --json` without a fault: it must exit 0; returns its summary."""
        log = self.log("run")
        done = subprocess.run(
            [str(BIN / "emotion"), "run", "--json", *self.sets()],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
        )
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        """``argv`` in a process group of its own (so a kill reaches its children), output to a log."""
        log = self.log(name)
        with log.open("w") as out:
            process = subprocess.Popen(
                argv,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=default_sigint,
            )
        return process, log

    def kill_at(self, point: str, argv: list[str], trigger: Callable[[subprocess.Popen, Path], None] | None = None):
        """Start ``argv`` with the fault point set (``trigger`` then makes it go there), wait for its marker,
        SIGKILL its process group."""
        marker = self.logs / f"{self.started + 1:02d}-{point}.marker"
        process, log = self.start(point, argv, self.env | {POINT_VARIABLE: point, MARKER_VARIABLE: str(marker)})
        try:
            if trigger:
                trigger(process, log)
            wait_for(f"{point} to be reached", marker.exists, process, log)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, prefect_harness: None) -> Lab:
    """A project with a champion from one clean run; its processes share the session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path_factory.mktemp("faults")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env |= {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}
    (folder / "logs").mkdir()
    lab = Lab(init_project(folder / "project"), tiny_model_dir, env, folder / "logs")
    assert lab.run()["aliases"] == ["challenger", "champion"]
    return lab


@dataclass(frozen=True)
class State:
    """What must survive a kill: the registered versions, the champion, and the snapshot's hash."""

    versions: frozenset[str]
    champion: str | None
    data_hash: str


def check_registry(cfg: Any) -> tuple[frozenset[str], str | None]:
    """Every registered version downloads as a model folder; the champion loads with MLflow and predicts."""
    import mlflow.pyfunc
    import pandas as pd

    client = connection.client(cfg.registry)
    versions = frozenset(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    with tempfile.TemporaryDirectory(prefix="faults-model-") as tmp:
        for version in versions:
            folder = run_log.download_model(f"models:/{MODEL}/{version}", Path(tmp) / version)
            assert (folder / "config.json").exists() and (folder / "model.safetensors").exists(), version
    champion = model_versions.version_by_alias(cfg.registry, client, model_versions.CHAMPION)
    if champion is None:
        return versions, None
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(pd.DataFrame({"text": ["i am so happy"]}))
    assert served["label"].isin(LABELS).all()
    return versions, str(champion.version)


def check_snapshot(cfg: Any) -> str:
    """data/ matches data.dvc, the DVC cache and remote hold it, and the ingest report describes these bytes."""
    from dvc.repo import Repo

    from pipeline import stages
    from pipeline.data import ingest
    from pipeline.registry.versioning import dvc_cached_file, dvc_hash

    project = Path(cfg.project_dir)
    layout = stages.Layout.of(cfg)
    data_hash = dvc_hash(project / "data.dvc")
    with contextlib.chdir(project), Repo(str(project)) as repo:
        assert repo.status(targets=["data.dvc"]) == {}, "data/ differs from data.dvc"
        assert repo.status(targets=["data.dvc"], cloud=True) == {}, "the DVC remote lacks the snapshot"
    assert dvc_cached_file(project, data_hash, ingest.SNAPSHOT_NAME) is not None
    assert ingest.read_report(layout.ingest_report, layout.snapshot) is not None, "no ingest report of data/"
    assert sum(1 for _ in (layout.snapshot / ingest.SNAPSHOT_NAME).open()) == 720
    return data_hash


def check(cfg: Any, before: State | None = None) -> State:
    """All invariants; with ``before``, also that no version disappeared and the snapshot is the same data."""
    versions, champion = check_registry(cfg)
    state = State(versions, champion, check_snapshot(cfg))
    if before is not None:
        assert before.versions <= state.versions, f"versions lost: {before.versions - state.versions}"
        assert state.champion is not None, "the champion alias is gone"
        assert state.data_hash == before.data_hash  # the same source: the same snapshot, whichever run wrote it
    return state


@pytest.mark.parametrize(("point", "attempt"), [(p, n) for n in range(1, REPEATS + 1) for p in POINTS])
def test_a_process_killed_at_a_fault_point_loses_nothing(lab: Lab, point: str, attempt: int) -> None:
    """Round after round (so an interrupted long series has tried every point), each point once per round."""
    if point.startswith("serve."):
        kill_server_during_reload(lab, point)
    else:
        kill_training_run(lab, point)


def kill_training_run(lab: Lab, point: str) -> None:
    cfg = lab.config()
    before = lab.state()

    lab.kill_at(point, [str(BIN / "emotion"), "run", *lab.sets()])

    after_kill = check(cfg, before)
    summary = lab.run()
    after_rerun = check(cfg, after_kill)
    assert summary["version"] in after_rerun.versions - after_kill.versions  # the rerun registered a new version
    assert after_rerun.champion == summary["version"]  # and, the gate passing, promoted it
    moves = [event.version for event in champion_alias.history(cfg.registry, connection.client(cfg.registry))]
    assert after_kill.champion in moves and moves[-1] == after_rerun.champion  # every champion move is recorded
    lab.checked = after_rerun


def served_version(url: str) -> str | None:
    """The version /health reports as serving, None while the server is not up (or serves nothing)."""
    try:
        response = httpx.get(f"{url}/health", timeout=5)
    except httpx.TransportError:
        return None
    return str(response.json()["version"]) if response.status_code == 200 else None


def kill_server_during_reload(lab: Lab, point: str) -> None:
    """Kill `emotion serve` while it hot-reloads a new champion; restarted, it serves that champion."""
    cfg = lab.config()
    before = lab.state()
    target = max((v for v in before.versions if v != before.champion), key=int)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "emotion"), "serve", "--port", str(port), *lab.sets("serve.refresh_seconds=0.5")]

    def promote_while_serving(process: subprocess.Popen, log: Path) -> None:
        wait_for("the server to serve the champion", lambda: served_version(url) == before.champion, process, log)
        champion_alias.promote(
            cfg.registry, connection.client(cfg.registry), target, actor="test_faults", reason="hot reload", force=True
        )

    lab.kill_at(point, argv, promote_while_serving)  # the refresh thread loads the new champion

    after_kill = check(cfg, before)
    assert after_kill.champion == target
    process, log = lab.start("serve", argv)
    try:
        wait_for("the restarted server to serve the new champion", lambda: served_version(url) == target, process, log)
        response = httpx.post(f"{url}/predict", json={"text": "i feel wonderful today"}, timeout=60)
        assert response.status_code == 200 and response.json()["version"] == target, response.text
    finally:
        assert stop(process, signal.SIGINT) == 0, log.read_text()[-3000:]
    lab.checked = after_kill  # serving changed nothing in the registry or the snapshot
