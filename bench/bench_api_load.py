"""A bounded load test of the REST API on loopback: N concurrent clients, a request budget and a time limit.

By default it starts `emotion serve` on a free port over the benchmark store (see README, "Benchmarks"),
waits for it to load the champion, warms it up, then runs the load and stops the server:

    python bench/bench_api_load.py --concurrency 32 --requests 5000 --duration 120 \
        --set project_dir=/tmp/bench-proj --set mlflow.tracking_uri=sqlite:////tmp/bench-proj/mlflow.db

or against a server that is already running: ``--url http://127.0.0.1:8000``. Each request classifies one
test text (``--texts-per-request`` for batches). Reports p50/p90/p99 latency, throughput and errors, and writes
bench/results/bench_api_load.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, REPO, machine, read_texts, write_result

EMOTION = Path(sys.executable).parent / "emotion"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server; default: start `emotion serve` on a free port")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for the server this script starts (repeatable)",
    )
    p.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=5000, help="total requests (the budget)")
    p.add_argument("--duration", type=float, default=120.0, help="stop after this many seconds even if budget remains")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--tag", help="results go to bench/results/bench_api_load-TAG.json instead of bench_api_load.json")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    return p.parse_args()


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of a process (this one when ``pid`` is None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(overrides: list[str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        str(EMOTION),
        "serve",
        "--port",
        str(port),
        "--set",
        "serve.access_log=false",
        *[arg for item in overrides for arg in ("--set", item)],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, proc: subprocess.Popen | None, log_path: Path | None, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log_path.read_text() if log_path else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy in {timeout:.0f}s")


async def load(
    url: str, texts: list[str], concurrency: int, budget: int, duration: float, per_request: int
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    versions: dict[str, int] = {}
    issued = 0
    start = time.perf_counter()
    deadline = start + duration

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < budget and time.perf_counter() < deadline:
            i = issued
            issued += 1
            batch = [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]
            payload = {"text": batch[0]} if per_request == 1 else {"texts": batch}
            t0 = time.perf_counter()
            try:
                r = await http.post("/predict", json=payload)
                elapsed = time.perf_counter() - t0
                body = r.json() if r.status_code == 200 else {}
                if len(body.get("predictions", [])) == per_request:
                    latencies.append(elapsed)
                    version = body["version"]
                    versions[version] = versions.get(version, 0) + 1
                else:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except Exception as exc:  # a refused or dropped connection is an error, not a crash of the benchmark
                errors.append(f"{type(exc).__name__}: {exc}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else None

    done = len(latencies) + len(errors)
    return {
        "requests": done,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:10],
        "wall_seconds": round(wall, 2),
        "stopped_by": "budget" if done >= budget else "time limit",
        "requests_per_second": round(done / wall, 1),
        "texts_per_second": round(len(latencies) * per_request / wall, 1),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": round(ms[-1], 2) if ms else None,
            "mean": round(statistics.fmean(ms), 2) if ms else None,
        },
        "versions": versions,
    }


def main() -> int:
    args = parse_args()
    import httpx

    texts, _ = read_texts(args.data, 2000)
    proc, log_path = None, None
    if args.url:
        url = args.url.rstrip("/")
    else:
        log_path = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.log"
        proc, url = start_server(args.set, log_path)
        print(f"started emotion serve on {url} (log: {log_path})", flush=True)
    try:
        wait_healthy(url, proc, log_path)
        model = httpx.get(f"{url}/model", timeout=30).json()
        print(f"serving {model['name']} version {model['version']} backend {model['backend']}", flush=True)
        if args.warmup:
            asyncio.run(load(url, texts, args.concurrency, args.warmup, args.duration, args.texts_per_request))
        load_before = os.getloadavg()
        server_cpu, client_cpu = cpu_seconds(proc.pid) if proc else None, cpu_seconds()
        result = asyncio.run(load(url, texts, args.concurrency, args.requests, args.duration, args.texts_per_request))
        client_cpu = cpu_seconds() - client_cpu
        if server_cpu is not None:
            server_cpu = cpu_seconds(proc.pid) - server_cpu
        result["cpu_seconds"] = {
            "server": round(server_cpu, 2) if server_cpu is not None else None,
            "load_generator": round(client_cpu, 2),
        }
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    info = machine()
    info["load_average_before"] = list(load_before)
    info["note"] = "server and load generator share the same cores (loopback)"
    path = write_result(
        "bench_api_load" + (f"-{args.tag}" if args.tag else ""),
        {
            "url": url,
            "started_server": proc is not None,
            "server_overrides": args.set,
            "concurrency": args.concurrency,
            "request_budget": args.requests,
            "duration_limit_seconds": args.duration,
            "texts_per_request": args.texts_per_request,
            "warmup_requests": args.warmup,
            "model": {
                k: model.get(k) for k in ("name", "version", "backend", "requested_backend", "parity", "metrics")
            },
            "machine": info,
            "results": result,
        },
    )
    lat = result["latency_ms"]
    print(
        f"{result['requests']} requests ({result['ok']} ok, {result['errors']} errors) in {result['wall_seconds']}s "
        f"[{result['stopped_by']}]: {result['requests_per_second']} req/s, {result['texts_per_second']} texts/s; "
        f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; "
        f"CPU seconds {result['cpu_seconds']}"
    )
    print(f"wrote {path}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
