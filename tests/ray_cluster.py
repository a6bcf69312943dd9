"""A real two-node Ray cluster on 127.0.0.1 for the Ray tests (scoring engine, Ray Serve): a head and a worker
node as separate processes, started with this interpreter so their workers import this checkout's code.

The cluster is stopped by signalling only the processes whose command line names its own temp dir, so other Ray
clusters on the machine are left alone (``ray stop`` would stop every Ray process here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port

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
    """SIGTERM, then SIGKILL, to the processes of this cluster only (found by its temp dir). A test cluster needs
    no long grace: some of Ray's processes outlive SIGTERM anyway, and each second here is a second of every run."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 15)):
        for pid in _cluster_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _cluster_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not _cluster_pids(marker), "Ray processes of the test cluster survived SIGKILL"


def _ray_start(*args: str) -> None:
    # `python -m ray.scripts.scripts` is the `ray` command run by this interpreter (a worktree's venv may have no
    # `ray` script of its own, and the nodes' workers must use this interpreter)
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args]
    done = subprocess.run(command, env=RAY_ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"ray start {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@contextlib.contextmanager
def two_node_cluster() -> Iterator[str]:
    """A head (2 logical CPUs) and one worker node (1); yields the head's address. Fails (not skips) when Ray
    cannot start; the cluster's processes are stopped whatever happens."""
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
