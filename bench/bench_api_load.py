"""A bounded load test of the REST API on loopback: N concurrent clients, a request budget and a time limit.

By default it starts `emotion serve` on a free port over the benchmark store (see README, "Benchmarks"),
waits for it to load the champion, warms it up, then runs the load and stops the server:

    python bench/bench_api_load.py --concurrency 32 --requests 5000 --duration 120 \
        --set project_dir=/tmp/bench-proj --set mlflow.tracking_uri=sqlite:////tmp/bench-proj/mlflow.db

or against a server that is already running: ``--url http://127.0.0.1:8000``. Each request classifies one
test text (``--texts-per-request`` for batches). Reports p50/p90/p99 latency, throughput and errors, and writes
bench/results/bench_api_load.json. Not a test: never collected by pytest.

``--soak SECONDS`` runs a bounded soak instead: the clients for that long with no request budget, the shadow on
(``serve.shadow=challenger``), and every ``--reload-every`` seconds the champion alias moved between two versions
followed by ``POST /reload``, so each reload is a real hot swap. The store needs two versions besides the
challenger; missing ones are registered as copies of the champion's model (``--set`` must point at the store) and
the champion alias is put back at the end. It reports errors, latency and the server's resident memory (sampled
every 5 s), judging memory growth by a rule fixed in this file before the run (``memory_growth``), and writes
bench/results/bench_api_load-soak.json.

``--explain-burst N`` measures the explanation budget (issue: a burst of explanations must not starve predictions):
the same /predict load twice, first alone, then beside N clients that keep asking ``/explain`` for 2,000-character
texts (a 429 is honoured by waiting its Retry-After), and reports /predict's p99 under the burst against twice its
idle p99, with the /explain answers counted by status. Writes bench/results/bench_api_load-explain-burst.json.

``--generator wrk`` measures with wrk (C, one thread; bench/wrk_predict.lua) instead of the Python clients, whose
own CPU competes with the server on a 2-core machine; the generator's CPU seconds are reported either way.
``--profile NAME.svg`` samples the server with py-spy (every thread; ``--profile-native`` adds C frames) for the
measured load and keeps the flame graph in bench/results/.
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
from load_tools import serve_workers, start_profile, tree_cpu_seconds, wait_all_workers, wrk_load

from pipeline.registry import connection, model_versions

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
    p.add_argument("--soak", type=float, metavar="SECONDS", help="a soak of this length: reloads, shadow, memory")
    p.add_argument("--reload-every", type=float, default=30.0, help="seconds between hot swaps in a soak")
    p.add_argument("--explain-burst", type=int, metavar="N", help="also measure /predict beside N /explain clients")
    p.add_argument("--generator", choices=["python", "wrk"], default="python", help="load generator of the measure")
    p.add_argument("--profile", metavar="NAME.svg", help="py-spy flame graph of the server into bench/results/")
    p.add_argument("--profile-native", action="store_true", help="with --profile: native (C) frames too")
    p.add_argument(
        "--engine-model",
        type=Path,
        help="the served model's folder: also time its engine (same backend, same texts, before the server starts)",
    )
    args = p.parse_args()
    if args.soak and args.explain_burst:
        p.error("--soak and --explain-burst are separate runs")
    if args.generator == "wrk" and (args.soak or args.explain_burst):
        p.error("--generator wrk measures /predict alone: no --soak or --explain-burst")
    if args.profile and args.url:
        p.error("--profile samples the server this script starts (no --url)")
    if args.soak and args.url:
        p.error("--soak starts its own server over the store given by --set (it moves the champion alias)")
    return args


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (psutil if installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # the process is gone
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (the Python load generator)."""
    times = os.times()
    return times.user + times.system


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
    """Until /health is 200; a server that is up but has no model to serve ends the benchmark at once (there is
    nothing to wait for: `make bench-model` did not leave a champion), and every wait has a time limit."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log_path.read_text() if log_path else ''}")
        try:
            answer = httpx.get(f"{url}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if answer.status_code == 200:
            return
        if answer.status_code == 503 and answer.json().get("status") == "no model" and answer.json().get("last_check"):
            raise SystemExit(
                f"{url} is up but has no model to serve (the registry has no champion): train one that passes the "
                "gate (make bench-model), or promote a version with `emotion promote VERSION --reason ...`"
            )
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy in {timeout:.0f}s")


async def load(
    url: str,
    texts: list[str],
    concurrency: int,
    budget: float,
    duration: float,
    per_request: int,
    background: Any = None,
) -> dict[str, Any]:
    """Run the clients until the budget or the time limit; ``background(http, deadline)``, if given, runs beside
    them (the soak's reloads and memory samples) and its result is returned under "background"."""
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
    extra: Any = None
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        tasks = [client(http) for _ in range(concurrency)]
        if background is not None:
            *_, extra = await asyncio.gather(*tasks, background(http, deadline))
        else:
            await asyncio.gather(*tasks)
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
        "background": extra,
    }


EXPLAIN_CHARS = 2000  # serve.explain_max_chars: the longest text /explain takes by default


def explain_burst(texts: list[str], clients: int) -> Any:
    """The burst beside the /predict clients: ``clients`` loops of 2,000-character explanations on their own
    connections until the deadline; returns the /explain answers counted by status code."""
    import httpx

    long_text = " ".join(texts)[:EXPLAIN_CHARS].rsplit(" ", 1)[0]

    async def run(predict_http: httpx.AsyncClient, deadline: float) -> dict[str, Any]:
        statuses: dict[str, int] = {}

        async def one(http: httpx.AsyncClient) -> None:
            while time.perf_counter() < deadline:
                try:
                    r = await http.post("/explain", json={"text": long_text})
                    key = str(r.status_code)
                    if r.status_code == 429:
                        await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 2.0))
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1

        async with httpx.AsyncClient(base_url=predict_http.base_url, timeout=120) as http:  # its own connections
            await asyncio.gather(*(one(http) for _ in range(clients)))
        return {"explain_clients": clients, "explain_chars": len(long_text), "explain_statuses": statuses}

    return run


def burst_summary(idle: dict[str, Any], burst: dict[str, Any]) -> dict[str, Any]:
    """/predict's p99 beside the burst against twice its idle p99 (the explanation budget's promise)."""
    idle_p99, burst_p99 = idle["latency_ms"]["p99"], burst["latency_ms"]["p99"]
    ratio = round(burst_p99 / idle_p99, 2) if idle_p99 and burst_p99 else None
    return {
        "idle": {k: idle[k] for k in ("requests", "errors", "requests_per_second", "latency_ms")},
        "burst": {k: burst[k] for k in ("requests", "errors", "requests_per_second", "latency_ms")},
        "explain": burst["background"],
        "p99_ratio": ratio,
        "target": "burst p99 <= 2 x idle p99",
        "met": ratio is not None and ratio <= 2.0 and not burst["errors"],
    }


SOAK_ALIAS = "bench-soak"  # the second version the soak swaps the champion alias to (a copy of the champion)


class SoakStore:
    """The registry side of a soak: a challenger for the shadow, a second version to swap the champion to, and
    the champion alias put back afterwards."""

    def __init__(self, overrides: list[str]) -> None:
        from pipeline.config import load_config_from_env

        self.cfg = load_config_from_env(None, overrides)
        self.client = connection.client(self.cfg.registry)
        champion = model_versions.version_by_alias(self.cfg.registry, self.client, model_versions.CHAMPION)
        if champion is None:
            raise SystemExit("the store has no champion: train one first (make bench-model)")
        self.champion = champion
        challenger = self._version_for(model_versions.CHALLENGER, "shadow challenger")
        self.swap = [str(champion.version), self._version_for(SOAK_ALIAS, "hot-swap target")]
        print(f"soak: champion {self.swap[0]}, swapped with {self.swap[1]}; challenger {challenger}", flush=True)

    def _version_for(self, alias: str, why: str) -> str:
        """The version holding ``alias`` if it is not the champion's, else a new copy of the champion's model."""
        found = model_versions.version_by_alias(self.cfg.registry, self.client, alias)
        if found is not None and str(found.version) != str(self.champion.version):
            return str(found.version)
        c = self.champion
        copy = self.client.create_model_version(
            c.name, c.source, c.run_id, tags={**c.tags, "bench": why}, model_id=getattr(c, "model_id", None)
        )
        model_versions.set_alias(self.cfg.registry, self.client, alias, str(copy.version))
        return str(copy.version)

    def move_champion(self, version: str) -> None:
        model_versions.set_alias(self.cfg.registry, self.client, model_versions.CHAMPION, version)

    def restore(self) -> None:
        self.move_champion(str(self.champion.version))


def soak_background(store: SoakStore, pid: int, every: float) -> Any:
    """The soak's companion to the clients: a hot swap every ``every`` seconds (alias moved, then POST /reload)
    and the server's resident memory every 5 s."""

    async def run(http: Any, deadline: float) -> dict[str, Any]:
        start = time.perf_counter()
        rss: list[tuple[float, int | None]] = [(0.0, rss_bytes(pid))]
        reloads: list[dict[str, Any]] = []
        next_swap = start + every
        while (now := time.perf_counter()) < deadline:
            await asyncio.sleep(max(0.0, min(5.0, deadline - now, next_swap - now)))
            now = time.perf_counter()
            rss.append((round(now - start, 1), rss_bytes(pid)))
            if now >= next_swap and now < deadline:
                target = store.swap[(len(reloads) + 1) % 2]
                await asyncio.to_thread(store.move_champion, target)
                t0 = time.perf_counter()
                response = await http.post("/reload", timeout=600)
                body = response.json() if response.status_code == 200 else {}
                reloads.append(
                    {
                        "at": round(t0 - start, 1),
                        "status": response.status_code,
                        "to": target,
                        "changed": body.get("changed"),
                        "serving": body.get("version"),
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                next_swap += every
        return {"rss_samples": rss, "reloads": reloads}

    return run


SOAK_METRICS = ("emotion_errors_total", "emotion_shadow_samples_total", "emotion_shadow_dropped_total")

# The memory-growth rule, fixed before the soak it judges (issue 29), so no choice of "start" is made after
# seeing the curve. The first MEMORY_WARMUP_SECONDS hold loading (the second version, the shadow challenger,
# their first batches and the allocator's warm-up) and are not judged. The start level is the
# MEMORY_PERCENTILE-th percentile of the resident-memory samples in the MEMORY_WINDOW_SECONDS after the warm-up;
# the end level is the same percentile of the samples in the last MEMORY_WINDOW_SECONDS of the soak. A percentile
# of a window, not one sample, so that a hot swap's transient (both versions held for a moment) neither makes
# nor hides growth. Growth = end / start - 1, judged against MEMORY_GROWTH_LIMIT.
MEMORY_WARMUP_SECONDS = 120.0
MEMORY_WINDOW_SECONDS = 60.0
MEMORY_PERCENTILE = 50.0
MEMORY_GROWTH_LIMIT = 0.05


def memory_growth(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """The pre-registered memory-growth figure of a soak's (seconds, bytes) samples; None where too short."""
    import numpy as np

    end = samples[-1][0] if samples else 0.0
    start_window = [b for t, b in samples if MEMORY_WARMUP_SECONDS <= t < MEMORY_WARMUP_SECONDS + MEMORY_WINDOW_SECONDS]
    end_window = [b for t, b in samples if t > end - MEMORY_WINDOW_SECONDS]
    rule = {
        "warmup_seconds": MEMORY_WARMUP_SECONDS,
        "window_seconds": MEMORY_WINDOW_SECONDS,
        "percentile": MEMORY_PERCENTILE,
        "limit": MEMORY_GROWTH_LIMIT,
    }
    if not start_window or end < MEMORY_WARMUP_SECONDS + 2 * MEMORY_WINDOW_SECONDS:
        return {"rule": rule, "growth_percent": None, "met": None}
    first = float(np.percentile(start_window, MEMORY_PERCENTILE))
    last = float(np.percentile(end_window, MEMORY_PERCENTILE))
    growth = last / first - 1
    return {
        "rule": rule,
        "start_mib": round(first / 2**20, 1),
        "end_mib": round(last / 2**20, 1),
        "growth_percent": round(growth * 100, 2),
        "met": growth <= MEMORY_GROWTH_LIMIT,
    }


def soak_summary(background: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """Memory (first to last sample, and growth by the pre-registered rule above), the reloads, and the server's
    own error/shadow counters."""
    rss = [(t, b) for t, b in background["rss_samples"] if b is not None]
    first, last = (rss[0][1], rss[-1][1]) if rss else (None, None)
    reloads = background["reloads"]
    return {
        "rss_mib_start": round(first / 2**20, 1) if first else None,
        "rss_mib_end": round(last / 2**20, 1) if last else None,
        "rss_mib_max": round(max(b for _, b in rss) / 2**20, 1) if rss else None,
        "rss_growth_percent": round((last - first) / first * 100, 2) if first and last else None,
        "memory_growth": memory_growth(rss),
        "reloads": len(reloads),
        "reload_failures": sum(1 for r in reloads if r["status"] != 200 or r["serving"] != r["to"]),
        "reload_log": reloads,
        "server_counters": metrics,
        "rss_samples_mib": [(t, round(b / 2**20, 1)) for t, b in rss],
    }


def scraped(url: str, prefixes: tuple[str, ...]) -> dict[str, float]:
    """The server's Prometheus samples whose names start with ``prefixes`` (errors, shadow counts)."""
    import httpx

    found = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(prefixes):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def engine_texts_per_second(model: Path, texts: list[str], overrides: list[str]) -> dict[str, Any]:
    """The served backend's own speed on the same texts (torch's default threads, best of 3 after a warm-up): the
    figure the API is compared with."""
    from pipeline.config import load_config
    from pipeline.serving.backends import FP32, FastClassifier

    cfg = load_config(REPO / "params.yaml", overrides, {})
    fp32 = FastClassifier.load(model, FP32, cfg.model.max_length, 64)
    backend = cfg.serve.backend
    clf = fp32 if backend == FP32 else fp32.converted(backend)
    clf.predict_proba(texts[:64])
    best = min(_timed(clf.predict_proba, texts) for _ in range(3))
    result = {"backend": backend, "texts": len(texts), "seconds": round(best, 3), "texts_per_second": len(texts) / best}
    print(f"engine {backend}: {result['texts_per_second']:.1f} texts/s", flush=True)
    return result


def _timed(run: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    run(texts)
    return time.perf_counter() - started


def default_suffix(args: argparse.Namespace) -> str:
    return "-soak" if args.soak else ("-explain-burst" if args.explain_burst else "")


def main() -> int:
    args = parse_args()
    import httpx

    texts, _ = read_texts(args.data, 2000)
    proc, log_path = None, None
    import torch
    from common import matmul_gflops

    peak = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}  # before the server runs
    print(f"matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f}", flush=True)
    engine = engine_texts_per_second(args.engine_model, texts, args.set) if args.engine_model else None
    store = None
    if args.soak:
        store = SoakStore(args.set)
        args.set = [*args.set, "serve.shadow=challenger", "serve.refresh_seconds=0"]  # swaps only by our reloads
        args.requests, args.duration = 10**9, args.soak
    if args.url:
        url = args.url.rstrip("/")
    else:
        log_path = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.log"
        proc, url = start_server(args.set, log_path)
        print(f"started emotion serve on {url} (log: {log_path})", flush=True)
    try:
        wait_healthy(url, proc, log_path)
        if log_path is not None:
            wait_all_workers(log_path, serve_workers(args.set), 600)
        model = httpx.get(f"{url}/model", timeout=30).json()
        if model.get("requested_backend") and model.get("backend") != model.get("requested_backend"):
            raise SystemExit(
                f"the server fell back from {model['requested_backend']} to {model.get('backend')} "
                f"(parity: {model.get('parity')}): a benchmark of another backend than asked is not run"
            )
        print(f"serving {model['name']} version {model['version']} backend {model['backend']}", flush=True)
        if args.warmup:
            asyncio.run(load(url, texts, args.concurrency, args.warmup, args.duration, args.texts_per_request))
        load_before = os.getloadavg()
        server_cpu, client_cpu = tree_cpu_seconds(proc.pid) if proc else None, cpu_seconds()
        background = soak_background(store, proc.pid, args.reload_every) if store and proc else None
        svg = REPO / "bench" / "results" / args.profile if args.profile and proc else None
        spy = start_profile(proc.pid, args.duration, svg, args.profile_native) if svg and proc else None
        if args.generator == "wrk":
            result = wrk_load(url, texts, args.concurrency, args.duration, args.texts_per_request)
        else:
            result = asyncio.run(
                load(url, texts, args.concurrency, args.requests, args.duration, args.texts_per_request, background)
            )
        if spy is not None:
            _, err = spy.communicate(timeout=args.duration + 120)
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode()[-2000:]}")
            result["profile_svg"] = str(svg.relative_to(REPO)) if svg else None
        if store is not None:
            result["soak"] = soak_summary(result.pop("background"), scraped(url, SOAK_METRICS))
        if args.explain_burst:
            burst = asyncio.run(
                load(
                    url,
                    texts,
                    args.concurrency,
                    args.requests,
                    args.duration,
                    args.texts_per_request,
                    explain_burst(texts, args.explain_burst),
                )
            )
            result["explain_burst"] = burst_summary(result, burst)
        client_cpu = cpu_seconds() - client_cpu
        if server_cpu is not None:
            server_cpu = tree_cpu_seconds(proc.pid) - server_cpu
        result["cpu_seconds"] = {
            "server": round(server_cpu, 2) if server_cpu is not None else None,
            "load_generator": result.pop("generator_cpu_seconds", round(client_cpu, 2)),
        }
    finally:
        if store is not None:
            store.restore()
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    info = machine()
    info["load_average_before"] = list(load_before)
    info["matmul_peak_gflops"] = peak
    info["note"] = "server and load generator share the same cores (loopback)"
    share = round(result["texts_per_second"] / engine["texts_per_second"], 3) if engine else None
    path = write_result(
        "bench_api_load" + (f"-{args.tag}" if args.tag else default_suffix(args)),
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
            "engine": engine,
            "api_share_of_engine": share,
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
    if share is not None:
        print(f"API at {share:.0%} of the engine's texts/s")
    soak = result.get("soak")
    if soak is not None:
        print(
            f"soak: {soak['reloads']} hot swaps ({soak['reload_failures']} failed); resident memory "
            f"{soak['rss_mib_start']} -> {soak['rss_mib_end']} MiB ({soak['rss_growth_percent']:+}%; "
            f"{soak['memory_growth']['growth_percent']}% by the pre-registered rule), "
            f"max {soak['rss_mib_max']} MiB; server counters {soak['server_counters']}"
        )
    explained = result.get("explain_burst")
    if explained is not None:
        alone, beside = explained["idle"]["latency_ms"]["p99"], explained["burst"]["latency_ms"]["p99"]
        print(
            f"/predict p99 {alone} ms alone, {beside} ms beside {args.explain_burst} /explain clients: "
            f"{explained['p99_ratio']}x (target <= 2x: {'met' if explained['met'] else 'NOT met'}); "
            f"/explain answers {explained['explain']['explain_statuses']}"
        )
    print(f"wrote {path}")
    burst_errors = explained is not None and explained["burst"]["errors"]
    failed = result["errors"] or (soak is not None and soak["reload_failures"]) or burst_errors
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
