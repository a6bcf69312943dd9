"""The project lock: a waiter learns who holds it, a timeout names the holder, a SIGKILLed holder blocks nobody;
``artifacts/latest`` follows the last published run folder."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.errors import PipelineError
from pipeline.ops import lock
from tests.conftest import PARAMS, REPO

HOLD = """
import sys, time
from pathlib import Path
from pipeline.ops.lock import held
with held(Path(sys.argv[1]), "snapshot swap", 5):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path):
    """A separate process holding tmp_path/locks/project.lock until killed."""
    path = tmp_path / "locks" / "project.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", (
        proc.stderr.read() if proc.stderr else ""
    )
    yield path, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_waiter_logs_the_holder_and_its_timeout_names_pid_and_since(
    holder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, proc = holder
    written = lock.read_holder(path)
    assert written is not None and written.pid == proc.pid and written.purpose == "snapshot swap"
    monkeypatch.setattr(lock, "REPORT_AFTER_SECONDS", 0.3)

    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, "pipeline.ops.lock"),
        pytest.raises(PipelineError) as caught,
        lock.held(path, "promotion", timeout=1.5),
    ):
        pytest.fail("acquired a lock another process holds")
    assert 1.4 < time.monotonic() - started < 10
    message = str(caught.value)
    assert f"pid {proc.pid}" in message and f"since {written.since}" in message and "snapshot swap" in message
    assert "gave up after 2s" in message
    waits = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waits) == 1 and f"pid {proc.pid}" in waits[0]  # logged once, while still waiting


def test_a_lock_left_by_a_sigkilled_holder_is_taken_over(holder, caplog: pytest.LogCaptureFixture) -> None:
    path, proc = holder
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    stale = lock.read_holder(path)
    assert stale is not None and stale.pid == proc.pid and stale.is_gone()  # its holder file outlived it

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "pipeline.ops.lock"), lock.held(path, "snapshot swap", timeout=5) as me:
        assert time.monotonic() - started < 2  # the OS released the dead holder's lock
        assert me.pid == os.getpid() and lock.read_holder(path) == me
    assert any(f"from pid {proc.pid}" in r.getMessage() for r in caplog.records)
    assert lock.read_holder(path) is None  # a clean release removes the holder file


def test_try_once_refuses_a_held_lock_at_once(holder) -> None:
    path, proc = holder
    started = time.monotonic()
    with pytest.raises(PipelineError, match=f"pid {proc.pid}"), lock.held(path, "run abc", timeout=0):
        pass
    assert time.monotonic() - started < 2


def _config(project: Path):
    from pipeline.config import load_config

    return load_config(PARAMS, [f"project_dir={project}", f"mlflow.lock_file={project}/mlflow/registry.lock"], {})


def test_latest_points_at_the_last_published_run_folder(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    first, second = stages.Layout.for_run(cfg, "run1"), stages.Layout.for_run(cfg, "run2")
    for layout in (first, second):
        layout.model.mkdir(parents=True)
    assert stages.latest_run(cfg) is None

    latest = stages.publish_latest(cfg, first)
    assert latest.is_symlink() and os.readlink(latest) == "runs/run1" and stages.latest_run(cfg) == first.root
    stages.publish_latest(cfg, second)
    assert stages.latest_run(cfg) == second.root and (latest / "model").is_dir()
    assert sorted(p.name for p in cfg.artifacts.iterdir()) == ["latest", "locks", "runs"]  # no temporary left


def test_latest_is_a_pointer_file_where_symlinks_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path)
    layout = stages.Layout.for_run(cfg, "run1")
    layout.root.mkdir(parents=True)

    def no_symlinks(self: Path, target: Path, target_is_directory: bool = False) -> None:
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    latest = stages.publish_latest(cfg, layout)
    assert latest.is_file() and not latest.is_symlink() and latest.read_text() == "runs/run1\n"
    assert stages.latest_run(cfg) == layout.root


def test_run_layout_keeps_everything_in_the_run_folder(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    fixed, run = stages.Layout.of(cfg), stages.Layout.for_run(cfg, "abc")
    assert (
        fixed.checkpoints == tmp_path / "artifacts" / "checkpoints" and fixed.model == tmp_path / "artifacts" / "model"
    )
    root = tmp_path / "artifacts" / "runs" / "abc"
    assert run.root == root
    for path in (run.reports, run.prepared, run.model, run.plots, run.checkpoints, run.ingest_report):
        assert path.is_relative_to(root)
