"""`emotion score --engine ray` on a real two-node Ray cluster (head and worker as separate processes on 127.0.0.1)
scores row for row what the local engine scores; an unreachable cluster is a clear error naming its address.

The cluster is stopped by signalling only the processes whose command line names its own temp dir, so other Ray
clusters on the machine are left alone (``ray stop`` would stop every Ray process here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, PARAMS, free_port
from tests.integration.test_scoring import big_input

pytestmark = pytest.mark.slow

# token auth off on this loopback cluster: Ray turns it on for a head when ~/.ray/auth_token exists (a local
# ray.init() writes one), and a worker started without the token is then refused
RAY_ENV = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}


def _uses(proc: Path, marker: str) -> bool:
    """Whether a process names ``marker`` on its command line or holds a file under it open (Ray's agents rename
    themselves, but keep their log files in the cluster's temp dir open)."""
    try:
        if marker.encode() in (proc / "cmdline").read_bytes():
            return True
        return any(os.readlink(fd).startswith(marker) for fd in (proc / "fd").iterdir())
    except OSError:
        return False


def _cluster_pids(marker: str) -> list[int]:
    me = str(os.getpid())
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.name != me and _uses(p, marker)]


def _stop_cluster(marker: str) -> None:
    """SIGTERM, then SIGKILL, to the processes of this cluster only (found by its temp dir)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while _cluster_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not _cluster_pids(marker), "Ray processes of the test cluster survived SIGKILL"


def _ray_start(*args: str) -> None:
    done = subprocess.run([str(BIN / "ray"), "start", *args], env=RAY_ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"ray start {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head (2 logical CPUs) and one worker node (1): the engine runs CPUs - 1 actors, one per node here, and
    leaves a CPU for Ray Data's read and write tasks. Fails (not skips) when Ray cannot start."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        head = ["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false", f"--temp-dir={temp}"]
        _ray_start(*head, *common)
        _ray_start("--address", address, "--num-cpus", "1", *common)
        yield address
    finally:
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def score(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    sets = ["--set", f"project_dir={inp.parent}", "--set", "score.precision=fp32", "--set", "score.batch_size=16"]
    command = [str(BIN / "emotion"), "score", str(inp), "-o", str(out), "--model", str(model), "--json"]
    return subprocess.run(
        [*command, "--chunk-size", "100", "--config", str(PARAMS), *sets, *extra],
        cwd=inp.parent,
        env=RAY_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ray_engine_on_two_nodes_matches_the_local_engine_row_for_row(
    ray_cluster: str, tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    inp = big_input(tmp_path / "in.csv", 1)
    frame = pd.read_csv(inp).head(400).assign(n=range(400))
    frame.loc[[7, 250], "text"] = ""  # skipped by both engines (checks.severity.text_not_blank)
    frame.to_csv(inp, index=False)
    skip = ("--set", "checks.severity.text_not_blank=warning", "--set", "checks.severity.text_not_null=warning")

    local = score(inp, tmp_path / "local.parquet", tiny_classifier_dir, *skip)
    assert local.returncode == 0, local.stderr[-3000:]
    ray = score(inp, tmp_path / "ray.parquet", tiny_classifier_dir, "--engine", "ray", "--address", ray_cluster, *skip)
    assert ray.returncode == 0, ray.stderr[-3000:]

    summary = json.loads(ray.stdout)
    assert summary["engine"] == "ray" and (summary["rows_read"], summary["skipped_invalid"]) == (400, 2)
    assert len(summary["ray_nodes"]) == 2  # the head and the worker node both scored rows
    expected, got = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    assert list(got.columns) == list(expected.columns) and len(got) == 398
    probs = [c for c in expected.columns if c.startswith("p_")]
    pd.testing.assert_frame_equal(got.drop(columns=probs), expected.drop(columns=probs))
    assert np.abs(got[probs].to_numpy() - expected[probs].to_numpy()).max() < 1e-6
    assert json.loads(local.stdout)["engine"] == "local" and not any(tmp_path.glob("*.parts"))


def test_unreachable_cluster_is_an_error_naming_the_address(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    inp = big_input(tmp_path / "in.csv", 1)
    address = f"127.0.0.1:{free_port()}"
    done = score(inp, tmp_path / "out.parquet", tiny_classifier_dir, "--engine", "ray", "--address", address)
    assert done.returncode == 2 and f"cannot connect to the Ray cluster at {address}" in done.stderr
    assert not (tmp_path / "out.parquet").exists()
