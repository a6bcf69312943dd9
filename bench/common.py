"""Helpers shared by the benchmarks: the test texts, machine facts and writing results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "emotion" / "test.txt"
DEFAULT_MODEL = Path("/tmp/bench-proj/artifacts/latest/model")
PACKAGES = ("torch", "transformers", "tokenizers", "fastapi", "uvicorn", "httpx", "numpy", "mlflow")


def read_texts(path: Path, n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` (text, label) pairs of a dair-ai ``text;label`` file, read as ingest reads it."""
    from pipeline.config import DataConfig
    from pipeline.data.ingest import read_table

    frame = read_table(path, DataConfig(source=str(path), format="text")).head(n)
    if len(frame) < n:
        raise SystemExit(f"{path} has only {len(frame)} texts, {n} asked")
    return frame["text"].tolist(), frame["label"].tolist()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
                return sorted(f for f in line.split(":", 1)[1].split() if f in wanted)
    except OSError:
        pass
    return []


def machine() -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):  # a package not installed here is left out
            versions[name] = version(name)
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nice": os.nice(0),
        "load_average": list(os.getloadavg()),
        "packages": versions,
    }


def command() -> str:
    """The command line that produced the result, with the interpreter as seen from the repository."""
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else exe.name
    except ValueError:
        shown = exe.name
    return " ".join(shlex.quote(a) for a in [shown, *sys.argv])


def run_emotion(argv: list[str], overrides: list[str], cwd: Path | None = None) -> str:
    """One `emotion` command with the repository's params.yaml and --set values, in a scratch project of its own
    (no inherited MLflow or Optuna store, offline); its stdout. Its stage lines go to stderr, the console."""
    command = [str(Path(sys.executable).parent / "emotion"), *argv, "--config", str(REPO / "params.yaml")]
    for item in overrides:
        command += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, env=env, text=True)
    if done.returncode:
        raise SystemExit(f"`emotion {argv[0]}` failed (exit {done.returncode}): {shlex.join(command)}")
    return done.stdout


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def matmul_gflops(dtype: Any, n: int = 2048, iters: int = 20) -> float:
    """Best of three timings of an n x n matrix multiply, in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - start) / 1e9)
    return best


PIPELINE_BATCH_SIZES = (1, 8, 32, 64)
PIPELINE_DTYPES = ("fp32", "bf16")
DEFAULT_PIPELINE = "hf-pipeline fp32 batch_size=1"  # what `pipeline("text-classification")` does unasked


def pipeline_grid(model: Path, max_length: int, batch_sizes: tuple[int, ...] = PIPELINE_BATCH_SIZES) -> dict[str, Any]:
    """`transformers.pipeline("text-classification")` over ``model`` at every batch size and dtype a user could
    pick: name -> a function of texts returning the predicted label names. The strongest baseline is the best
    cell of this grid, measured beside our contender, not one guessed setting."""
    import torch
    from transformers import pipeline

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    grid = {}
    for dtype in PIPELINE_DTYPES:
        classify = pipeline("text-classification", model=str(model), device="cpu", dtype=dtypes[dtype])
        for batch in batch_sizes:
            grid[f"hf-pipeline {dtype} batch_size={batch}"] = lambda texts, c=classify, b=batch: [
                r["label"] for r in c(texts, batch_size=b, truncation=True, max_length=max_length)
            ]
    return grid


def best_baseline(rows: dict[str, dict[str, Any]], key: str) -> str:
    """The pipeline cell with the highest ``key`` (texts/s best or median): each ratio is taken against the
    baseline that is best by the same measure."""
    return max((n for n in rows if n.startswith("hf-pipeline")), key=lambda n: rows[n][key])
