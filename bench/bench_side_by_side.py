"""Three servers of the same registered model version, side by side in one run (issue 30, item 3): `emotion serve`,
`mlflow models serve` and the plain FastAPI + `transformers.pipeline` server a user writes first
(bench/plain_pipeline_server.py), each measured in turn under the same wrk load (``--concurrency`` connections,
one text per request, ``--duration`` seconds after ``--warmup`` seconds), on the same machine, with the bf16/fp32
matmul peak and our backend's engine speed (the same texts, torch's threads) measured in the same run. ``--rounds``
> 1 interleaves them (the order rotates each round).

    nice -n 10 .venv/bin/python bench/bench_side_by_side.py --duration 30 \\
        --set project_dir=/tmp/bench-proj --set mlflow.tracking_uri=sqlite:////tmp/bench-proj/mlflow.db \\
        --set serve.parity_source=$PWD/../shared/data/emotion

The version is the store's champion when the run starts (``--version`` to pin another). What each one gets:
- `emotion serve` with the given ``--set`` (its defaults otherwise; ``--set serve.workers=2`` for two processes),
  on POST /predict ``{"text": ...}``; a backend fallback (the server serving another backend than asked) fails the
  benchmark;
- `mlflow models serve -m models:/NAME/VERSION --env-manager local -h 127.0.0.1` with MLflow's defaults (uvicorn,
  one worker per CPU), on POST /invocations ``{"dataframe_split": {"columns": ["text"], "data": [[...]]}}``: the
  logged pyfunc (pipeline/serving/pyfunc.py) takes a DataFrame with a ``text`` column (its signature);
- the plain server on the version's downloaded model folder, POST /predict ``{"text": ...}``.
Every start and every wait has a time limit; a server that fails to start or answers with errors fails the run with
its log. Server CPU seconds include its child processes (MLflow's uvicorn workers, our serve.workers). Writes
bench/results/bench_side_by_side.json (``--tag`` to add a suffix). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api_load import engine_texts_per_second, free_port
from common import DEFAULT_DATA, REPO, machine, matmul_gflops, read_texts, write_result
from load_tools import serve_workers, tree_cpu_seconds, wait_all_workers, wrk_post

BIN = Path(sys.executable).parent
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the store, emotion serve's config")
    p.add_argument("--version", help="the registered version to serve (default: the champion's)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per contender and round")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before measuring")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server may take to answer")
    p.add_argument("--only", action="append", help="run only these contenders (ours, mlflow, plain)")
    p.add_argument("--tag")
    return p.parse_args()


def registered_version(overrides: list[str], version: str | None, folder: Path) -> tuple[str, str, str, Path]:
    """The model's name, version, tracking URI and its downloaded Hugging Face folder (for the plain server)."""
    from pipeline.config import load_config_from_env
    from pipeline.registry import model_spec

    cfg = load_config_from_env(None, overrides)
    registry = model_spec.Registry.of(cfg.registry)
    ref = model_spec.resolve(version or None, registry)
    ref = model_spec.download(ref, folder)
    assert ref.folder is not None
    return ref.name, ref.version, cfg.tracking_uri, ref.folder


def contenders(args: argparse.Namespace, name: str, version: str, folder: Path) -> dict[str, Any]:
    """Per contender: the command (with PORT), its health path, its scoring path and a request body per text."""
    ours = [str(BIN / "emotion"), "serve", "--port", "PORT", "--set", "serve.access_log=false"]
    ours += [arg for item in args.set for arg in ("--set", item)]
    mlflow = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local"]
    mlflow += ["-h", "127.0.0.1", "-p", "PORT"]
    plain = [sys.executable, str(REPO / "bench" / "plain_pipeline_server.py"), str(folder), "--port", "PORT"]
    text_body = lambda text: json.dumps({"text": text})  # noqa: E731
    frame_body = lambda text: json.dumps({"dataframe_split": {"columns": ["text"], "data": [[text]]}})  # noqa: E731
    return {
        "ours": {"command": ours, "health": "/health", "path": "/predict", "body": text_body},
        "mlflow": {"command": mlflow, "health": "/ping", "path": "/invocations", "body": frame_body},
        "plain": {"command": plain, "health": "/health", "path": "/predict", "body": text_body},
    }


def start(command: list[str], log_path: Path, tracking_uri: str) -> tuple[subprocess.Popen, str]:
    """The server on a free port of 127.0.0.1, in its own process group (so its workers stop with it)."""
    port = free_port()
    argv = [str(port) if arg == "PORT" else arg for arg in command]
    env = {**ENV, "PATH": f"{BIN}:{ENV.get('PATH', '')}", "MLFLOW_TRACKING_URI": tracking_uri}
    log = log_path.open("w")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float, what: str) -> float:
    """Seconds until ``url`` answers 200; a server that exits or is not ready in ``timeout`` fails the bench."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before answering; its log:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"{what} did not answer {url} with 200 in {timeout:.0f} s; its log:\n{log_path.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the server's process group, then SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def check_ours(url: str, version: str) -> dict[str, Any]:
    """Our server's /model: the same version, and no backend fallback (that would measure another backend)."""
    import httpx

    model = httpx.get(f"{url}/model", timeout=30).json()
    if str(model.get("version")) != str(version):
        raise SystemExit(f"emotion serve serves version {model.get('version')}, not {version}: move the champion")
    if model.get("requested_backend") and model.get("backend") != model.get("requested_backend"):
        raise SystemExit(f"emotion serve fell back from {model['requested_backend']} to {model.get('backend')}")
    return {k: model.get(k) for k in ("name", "version", "backend", "requested_backend")}


def measure(key: str, spec: dict[str, Any], args: argparse.Namespace, texts: list[str], store: tuple[str, str]) -> dict:
    """One contender: start, wait, check one answer, warm up, measure, stop. ``store``: tracking URI, version."""
    tracking_uri, version = store
    log_path = Path(tempfile.mkdtemp(prefix=f"bench-sbs-{key}-")) / "server.log"
    proc, url = start(spec["command"], log_path, tracking_uri)
    print(f"{key}: starting on {url} (log: {log_path})", flush=True)
    try:
        ready = wait_ready(url + spec["health"], proc, log_path, args.start_timeout, key)
        if key == "ours":
            wait_all_workers(log_path, serve_workers(args.set), args.start_timeout)
        import httpx

        first = httpx.post(url + spec["path"], content=spec["body"](texts[0]), timeout=120)
        headers = {"content-type": "application/json"}
        if first.status_code != 200:
            first = httpx.post(url + spec["path"], content=spec["body"](texts[0]), headers=headers, timeout=120)
        if first.status_code != 200:
            raise SystemExit(f"{key} answered {first.status_code}: {first.text[:500]}\n{log_path.read_text()[-3000:]}")
        served = check_ours(url, version) if key == "ours" else None
        bodies = [spec["body"](t) for t in texts]
        if args.warmup:
            wrk_post(url, spec["path"], bodies, args.concurrency, args.warmup)
        cpu = tree_cpu_seconds(proc.pid)
        result = wrk_post(url, spec["path"], bodies, args.concurrency, args.duration)
        result["server_cpu_seconds"] = round(tree_cpu_seconds(proc.pid) - cpu, 2)
        result["generator_cpu_seconds"] = result.pop("generator_cpu_seconds")
        result.update(seconds_to_ready=round(ready, 1), first_answer=first.json(), served=served)
        result["server_command"] = " ".join(spec["command"])
        if result["errors"]:
            raise SystemExit(f"{key}: {result['errors']} errors {result['error_kinds']}; log: {log_path}")
        lat = result["latency_ms"]
        print(
            f"{key}: {result['requests_per_second']} req/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"{result['errors']} errors, server CPU {result['server_cpu_seconds']} s, "
            f"wrk CPU {result['generator_cpu_seconds']} s",
            flush=True,
        )
        return result
    finally:
        stop(proc)


def main() -> int:
    args = parse_args()
    import torch

    texts, _ = read_texts(args.data, 2000)
    peak = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    print(f"matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sbs-model-") as tmp:
        name, version, uri, folder = registered_version(args.set, args.version, Path(tmp))
        print(f"model {name} version {version} (folder for the plain server: {folder})", flush=True)
        engine = engine_texts_per_second(folder, texts, args.set)  # ours' backend, torch's threads, same texts
        specs = contenders(args, name, version, folder)
        keys = [k for k in specs if not args.only or k in args.only]
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            rounds.append({key: measure(key, specs[key], args, texts, (uri, version)) for key in order})
    info = machine()
    info["matmul_peak_gflops"] = peak
    info["note"] = "servers and wrk share the same cores (loopback); one server runs at a time"
    best = {k: max(r[k]["requests_per_second"] for r in rounds) for k in keys}
    ratios = {k: round(best["ours"] / best[k], 2) for k in keys if "ours" in best and k != "ours" and best[k]}
    share = {"best": round(best["ours"] / engine["texts_per_second"], 3)} if "ours" in best else None
    path = write_result(
        "bench_side_by_side" + (f"-{args.tag}" if args.tag else ""),
        {
            "model": {"name": name, "version": version},
            "concurrency": args.concurrency,
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "rounds": rounds,
            "best_requests_per_second": best,
            "ours_over": ratios,
            "engine": engine,
            "ours_share_of_engine": share,
            "machine": info,
        },
    )
    print(f"best req/s {best}; ours over the others {ratios}; ours at {share} of the engine\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
