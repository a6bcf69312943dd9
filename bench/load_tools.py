"""Outside tools for bench_api_load.py: `wrk` (Debian's package) as a load generator in C, so the generator's own
CPU does not compete with the server as the Python one does, and `py-spy` (PyPI) for a sampling profile of the
server under load, kept as a flame graph (SVG)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "wrk_predict.lua"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living children (`emotion serve --workers`, MLflow's uvicorn
    workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def serve_workers(overrides: list[str]) -> int:
    """The ``serve.workers`` a ``--set`` list gives `emotion serve` (the last one wins, as in the config)."""
    given = [item.split("=", 1)[1] for item in overrides if item.startswith("serve.workers=")]
    return int(given[-1]) if given else 1


def wait_all_workers(log_path: Path, workers: int, timeout: float) -> None:
    """With ``serve.workers`` > 1, until the server's log says every worker answers: /health answers as soon as the
    first has loaded the champion, and connections opened before the others listen would all stay with it."""
    deadline = time.monotonic() + timeout
    while workers > 1 and f"{workers} server processes answering" not in log_path.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"not every one of {workers} workers answered in {timeout:.0f}s:\n{log_path.read_text()}")
        time.sleep(0.5)


def wrk_load(url: str, texts: list[str], concurrency: int, duration: float, per_request: int) -> dict[str, Any]:
    """``concurrency`` connections on one wrk thread for ``duration`` seconds, in the result shape of the Python
    generator's ``load`` (wrk has no request budget: it stops by time), plus wrk's own CPU seconds."""
    bodies = [
        json.dumps({"text": chunk[0]} if per_request == 1 else {"texts": chunk})
        for i in range(0, len(texts), per_request)
        if len(chunk := texts[i : i + per_request]) == per_request
    ]
    result = wrk_post(url, "/predict", bodies, concurrency, duration)
    result["texts_per_second"] = round(result["ok"] * per_request / result["wall_seconds"], 1)
    return result


def wrk_post(url: str, path: str, bodies: list[str], concurrency: int, duration: float) -> dict[str, Any]:
    """wrk POSTing ``bodies`` (JSON strings, in turn) to ``url + path``: one text per request, so texts/s is the
    ok answers per second. A non-2xx answer counts as an error (wrk's "status")."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk); or use --generator python")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as file:
        file.writelines(body + "\n" for body in bodies)
    cpu = _children_cpu()
    command = [wrk, "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout", "60s", "-s", str(LUA), url]
    done = subprocess.run([*command, "--", file.name, path], capture_output=True, text=True, timeout=duration + 120)
    Path(file.name).unlink()
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
    stats = json.loads(line.removeprefix("WRK_JSON "))
    wall = stats["duration_us"] / 1e6
    errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    ok = stats["requests"] - stats["status"]
    return {
        "generator": "wrk",
        "requests": stats["requests"],
        "ok": ok,
        "errors": errors,
        "error_kinds": {k: stats[k] for k in ("connect", "read", "write", "status", "timeout") if stats[k]},
        "wall_seconds": round(wall, 2),
        "stopped_by": "time limit",
        "requests_per_second": round(stats["requests"] / wall, 1),
        "texts_per_second": round(ok / wall, 1),
        "latency_ms": {
            "p50": round(stats["p50_us"] / 1000, 2),
            "p90": round(stats["p90_us"] / 1000, 2),
            "p99": round(stats["p99_us"] / 1000, 2),
            "max": round(stats["max_us"] / 1000, 2),
            "mean": round(stats["mean_us"] / 1000, 2),
        },
        "generator_cpu_seconds": round(_children_cpu() - cpu, 2),
        "command": " ".join([*command, "--", "BODIES.jsonl", path]),
    }


def start_profile(pid: int, seconds: float, svg: Path, native: bool) -> subprocess.Popen:
    """py-spy sampling ``pid`` (every thread) for ``seconds`` into a flame graph; wait on the returned process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--threads"]
    command += ["--subprocesses"]  # serve.workers > 1: the workers are the parent's children
    command += ["--native"] if native else []
    svg.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*command, "--format", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
