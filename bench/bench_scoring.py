"""Batch scoring of a file: `emotion score` against `transformers.pipeline("text-classification")`, and its memory.

The input is the emotion train texts repeated to ``--rows`` (default 100,000) rows, written to a CSV in ``--workdir``
(/tmp; never committed). `emotion score` runs as a subprocess over the whole file (default precision: bf16 where the
CPU has it) and, for a like-for-like comparison, in fp32 over the first ``--slice`` texts; the pipeline is timed on
that slice only (batch_size=32 and its default, 1), since over 100,000 texts it would take most of an hour. Peak RSS
of the scorer (``wait4``) is measured for 1x = ``--rows / 10`` and 10x = ``--rows`` texts: streaming in chunks, it
should barely grow. The Ray engine's overhead: the same ``--slice`` texts scored with ``--engine local`` and
``--engine ray`` (a local Ray the scorer starts, or ``--ray-address``); Ray's texts/s include starting the cluster
connection and the actors. The bf16 and fp32 matmul peaks are measured in the same run. ``--backends-only``: the
same ``--slice`` texts scored with ``score.backend`` torch (bf16), onnx-int8 and onnx-fp32, each a fresh `emotion
score` process (texts/s and peak RSS); the ONNX export is made once before, by a 2-row run.

    nice -n 10 python bench/bench_scoring.py                  # embedded MiniLM with a random head
    nice -n 10 python bench/bench_scoring.py --engines-only --slice 200    # a quick check of the engine comparison
    nice -n 10 python bench/bench_scoring.py --model /tmp/bench-proj/artifacts/latest/model
    nice -n 10 python bench/bench_scoring.py --backends-only --parity-source ../shared/data/emotion

Writes bench/results/bench_scoring.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_MODEL, REPO, Timer, machine, matmul_gflops, write_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TRAIN = REPO.parent / "shared" / "data" / "emotion" / "train.txt"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help=f"a model folder (default: {DEFAULT_MODEL} if present, else embedded)")
    p.add_argument("--rows", type=int, default=100_000, help="texts in the scored file (>= 100,000 for the report)")
    p.add_argument("--slice", type=int, default=5000, help="texts the pipeline (and fp32 scorer) are timed on")
    p.add_argument("--chunk-size", type=int, default=10_000)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-scoring"))
    p.add_argument("--ray-address", help="the Ray engine on this cluster (default: a local Ray the scorer starts)")
    p.add_argument("--engines-only", action="store_true", help="only the local vs Ray comparison on --slice texts")
    p.add_argument("--backends-only", action="store_true", help="only torch-bf16 vs onnx-int8 vs onnx-fp32")
    p.add_argument("--parity-source", help="serve.parity_source for onnx-int8's parity check (labelled data)")
    p.add_argument("--parity-tolerance", type=float, help="serve.parity_tolerance (default: params.yaml's)")
    return p.parse_args()


def model_folder(args: argparse.Namespace) -> Path:
    """The given folder, the `make bench-model` folder, or the embedded MiniLM with a random 6-emotion head."""
    if args.model:
        return args.model
    if (DEFAULT_MODEL / "config.json").exists():
        return DEFAULT_MODEL
    out = args.workdir / "embedded-random-head"
    if not (out / "config.json").exists():
        from pipeline.model.modeling import load_classifier, load_tokenizer, resolve_model_source

        source = resolve_model_source("embedded")
        load_classifier(source, LABELS).save_pretrained(out)
        load_tokenizer(source).save_pretrained(out)
    return out


def write_input(path: Path, rows: int) -> list[str]:
    import pandas as pd

    texts = [line.rpartition(";")[0] for line in TRAIN.read_text().splitlines() if line.strip()]
    repeated = (texts * (rows // len(texts) + 1))[:rows]
    pd.DataFrame({"text": repeated}).to_csv(path, index=False)
    return repeated


def run_scorer(
    inp: Path, out: Path, model: Path, chunk_size: int, *sets: str, flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`emotion score` as a subprocess: wall time, texts/s (its own, model loading excluded) and peak RSS."""
    import json

    out.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).with_name("emotion")),
        "score",
        str(inp),
        "-o",
        str(out),
        "--model",
        str(model),
        "--chunk-size",
        str(chunk_size),
        "--json",
        "--set",
        f"project_dir={inp.parent}",
        *flags,
    ]
    for item in sets:
        command += ["--set", item]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"emotion score failed ({process.returncode}): {' '.join(command)}")
    summary = json.loads(stdout)
    return {
        "rows": summary["rows_scored"],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "texts_per_second": summary["texts_per_second"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "settings": list(sets) + list(flags),
    }


def compare_engines(args: argparse.Namespace, model: Path, inp: Path) -> dict[str, Any]:
    """The same texts with the local and the Ray engine: texts/s of each and the Ray engine's overhead."""
    address = ("--address", args.ray_address) if args.ray_address else ()
    runs = {}
    for engine, flags in (("local", ("--engine", "local")), ("ray", ("--engine", "ray", *address))):
        runs[f"engine_{engine}"] = run_scorer(
            inp, args.workdir / f"engine_{engine}.parquet", model, args.chunk_size, flags=flags
        )
        print(f"engine_{engine}", runs[f"engine_{engine}"], flush=True)
    local, ray = runs["engine_local"], runs["engine_ray"]
    return runs | {
        "ray_overhead": {
            "texts_per_second_ratio_local_over_ray": round(local["texts_per_second"] / ray["texts_per_second"], 2),
            "extra_wall_seconds": round(ray["wall_seconds"] - local["wall_seconds"], 1),
            "cluster": args.ray_address or "a local Ray started by the scorer",
        }
    }


def engines_only(args: argparse.Namespace, model: Path, peak: dict[str, int]) -> None:
    sliced = args.workdir / f"texts_{args.slice}.csv"
    write_input(sliced, args.slice)
    notes = "Ray texts/s include connecting, staging and starting the actors; shared machine (see load_average)"
    write_runs("bench_scoring_engines", args, model, peak, compare_engines(args, model, sliced), notes)


def write_runs(name: str, args: argparse.Namespace, model: Path, peak: dict[str, int], runs: Any, notes: str) -> None:
    """One comparison's result file: the runs beside the model, input, chunking, matmul peak and machine."""
    payload = {
        "model": str(model),
        "input": f"emotion train texts repeated to {args.slice} rows (CSV in {args.workdir})",
        "chunk_size": args.chunk_size,
        "matmul_peak_gflops": peak,
        "machine": machine(),
        "runs": runs,
        "notes": notes,
    }
    print(f"-> {write_result(name, payload)}")


def backends_only(args: argparse.Namespace, model: Path, peak: dict[str, int]) -> None:
    """torch (bf16), onnx-int8 and onnx-fp32 on the same ``--slice`` texts, one `emotion score` process each."""
    sliced = args.workdir / f"texts_{args.slice}.csv"
    write_input(sliced, args.slice)
    two = args.workdir / "texts_2.csv"
    write_input(two, 2)
    parity = [f"serve.parity_source={Path(args.parity_source).resolve()}"] if args.parity_source else []
    if args.parity_tolerance is not None:
        parity.append(f"serve.parity_tolerance={args.parity_tolerance}")
    run_scorer(two, args.workdir / "export.parquet", model, args.chunk_size, "score.backend=onnx-fp32")  # export once
    runs = {}
    for name, sets in (
        ("torch-bf16", ("score.backend=torch", "score.precision=bf16")),
        ("onnx-int8", ("score.backend=onnx-int8", *parity)),
        ("onnx-fp32", ("score.backend=onnx-fp32",)),
    ):
        runs[name] = run_scorer(sliced, args.workdir / f"backend_{name}.parquet", model, args.chunk_size, *sets)
        print(name, runs[name], flush=True)
    notes = (
        "texts/s is the scorer's own (model loading, export and the int8 parity check excluded); one "
        "process per backend, in this order; shared machine (see load_average)"
    )
    write_runs("bench_scoring_backends", args, model, peak, runs, notes)


def run_pipeline(model: Path, texts: list[str], batch_size: int | None) -> dict[str, Any]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model), device="cpu")
    classify(texts[:8])  # warm-up
    kwargs = {"batch_size": batch_size} if batch_size else {}
    with Timer() as timer:
        classify(texts, truncation=True, max_length=128, **kwargs)
    return {
        "rows": len(texts),
        "batch_size": batch_size or "default (1)",
        "seconds": round(timer.seconds, 1),
        "texts_per_second": round(len(texts) / timer.seconds, 1),
    }


def main() -> None:
    import torch

    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = model_folder(args)
    peak = {"bf16": round(matmul_gflops(torch.bfloat16)), "fp32": round(matmul_gflops(torch.float32))}
    print(f"matmul peak: bf16 {peak['bf16']} GFLOP/s, fp32 {peak['fp32']} GFLOP/s", flush=True)
    if args.engines_only:
        return engines_only(args, model, peak)
    if args.backends_only:
        return backends_only(args, model, peak)
    full, small, sliced = (args.workdir / f"texts_{n}.csv" for n in (args.rows, args.rows // 10, args.slice))
    texts = write_input(full, args.rows)
    write_input(small, args.rows // 10)
    write_input(sliced, args.slice)
    runs = {}
    for name, inp, sets in (
        ("scorer_full", full, ()),
        ("scorer_tenth", small, ()),
        ("scorer_slice_fp32", sliced, ("score.precision=fp32",)),
    ):
        runs[name] = run_scorer(inp, args.workdir / f"{name}.parquet", model, args.chunk_size, *sets)
        print(name, runs[name], flush=True)
    for name, batch in (("pipeline_slice_batch32", 32), ("pipeline_slice_default", None)):
        runs[name] = run_pipeline(model, texts[: args.slice], batch)
        print(name, runs[name], flush=True)
    runs |= compare_engines(args, model, sliced)
    best_pipeline = max(
        runs["pipeline_slice_batch32"]["texts_per_second"], runs["pipeline_slice_default"]["texts_per_second"]
    )
    path = write_result(
        "bench_scoring",
        {
            "model": str(model),
            "input": f"emotion train texts repeated to {args.rows} rows (CSV in {args.workdir})",
            "chunk_size": args.chunk_size,
            "matmul_peak_gflops": peak,
            "machine": machine(),
            "runs": runs,
            "speedup_vs_best_pipeline": round(runs["scorer_full"]["texts_per_second"] / best_pipeline, 2),
            "speedup_fp32_vs_pipeline_batch32": round(
                runs["scorer_slice_fp32"]["texts_per_second"] / runs["pipeline_slice_batch32"]["texts_per_second"], 2
            ),
            "peak_rss_growth_10x": round(runs["scorer_full"]["peak_rss_mib"] / runs["scorer_tenth"]["peak_rss_mib"], 2),
            "notes": "pipeline timed on the first --slice texts only; scorer texts/s excludes model loading; "
            "the machine was shared with other jobs (see load_average)"
            + ("" if args.rows >= 100_000 else f"; reduced run: {args.rows} rows, not the full benchmark's 100,000"),
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
