"""Batch scoring of a file: `emotion score` against `transformers.pipeline("text-classification")`, and its memory.

The input is the emotion train texts repeated to ``--rows`` (default 100,000) rows, written to a CSV in ``--workdir``
(/tmp; never committed). Speed: both sides score the same first ``--slice`` texts, in ``--rounds`` interleaved rounds
(rotating order; best and median reported): `emotion score` as a subprocess (its default precision, bf16 where the
CPU has it, and fp32 for context; its own texts/s, model loading excluded) against `transformers.pipeline` at every
batch size of {1, 8, 32, 64} and dtype of {fp32, bf16}; ratios are taken against the best pipeline cell, best
against best and median against median, and each side's accuracy on the texts' gold labels is recorded (parity).
Memory: peak RSS of the scorer (``wait4``) for 1x = ``--rows / 10`` and 10x = ``--rows`` texts: streaming in
chunks, it should barely grow. The Ray engine's overhead: the same ``--slice`` texts scored with ``--engine local`` and
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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_MODEL,
    DEFAULT_PIPELINE,
    REPO,
    Timer,
    best_baseline,
    machine,
    matmul_gflops,
    pipeline_grid,
    write_result,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TRAIN = REPO.parent / "shared" / "data" / "emotion" / "train.txt"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help=f"a model folder (default: {DEFAULT_MODEL} if present, else embedded)")
    p.add_argument("--rows", type=int, default=100_000, help="texts in the scored file (>= 100,000 for the report)")
    p.add_argument("--slice", type=int, default=5000, help="texts both sides are timed on")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the speed comparison")
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


def write_input(path: Path, rows: int) -> tuple[list[str], list[str]]:
    """The train texts repeated to ``rows`` rows, written as a one-column CSV; the texts and their gold labels."""
    import pandas as pd

    pairs = [line.rpartition(";")[::2] for line in TRAIN.read_text().splitlines() if line.strip()]
    repeated = (pairs * (rows // len(pairs) + 1))[:rows]
    pd.DataFrame({"text": [t for t, _ in repeated]}).to_csv(path, index=False)
    return [t for t, _ in repeated], [label for _, label in repeated]


def scored_labels(out: Path) -> list[str]:
    """The scorer's predicted labels in input order."""
    import pandas as pd

    from pipeline.scoring.reader import ROW_ID

    return pd.read_parquet(out).sort_values(ROW_ID)["label"].tolist()


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
    """The same texts with the local and the Ray engine, ``--rounds`` interleaved rounds: texts/s of each (best and
    median) and the Ray engine's overhead, best against best and median against median."""
    address = ("--address", args.ray_address) if args.ray_address else ()
    engines = {"local": ("--engine", "local"), "ray": ("--engine", "ray", *address)}
    rounds: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    for round_index in range(args.rounds):
        for engine, flags in engines.items():
            run = run_scorer(inp, args.workdir / f"engine_{engine}.parquet", model, args.chunk_size, flags=flags)
            rounds[engine].append(run)
            print(f"round {round_index + 1} engine_{engine}", run, flush=True)
    speeds = {engine: [run["texts_per_second"] for run in runs] for engine, runs in rounds.items()}
    summary = {
        engine: {"texts_per_second_best": max(s), "texts_per_second_median": round(statistics.median(s), 1)}
        for engine, s in speeds.items()
    }
    return {f"engine_{engine}": {"rounds": runs} | summary[engine] for engine, runs in rounds.items()} | {
        "ray_overhead": {
            f"local_over_ray_{key}": round(
                summary["local"][f"texts_per_second_{key}"] / summary["ray"][f"texts_per_second_{key}"], 2
            )
            for key in ("best", "median")
        }
        | {"cluster": args.ray_address or "a local Ray started by the scorer"}
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


def speed_rounds(args: argparse.Namespace, model: Path, sliced: Path, texts: list[str]) -> dict[str, Any]:
    """Every contender on the same texts, ``--rounds`` times in a rotating order: texts/s and predicted labels."""
    grid = pipeline_grid(model, 128)
    for classify in grid.values():
        classify(texts[:8])  # warm-up
    contenders: dict[str, Any] = {
        "ours emotion score (bf16 auto)": lambda: run_scorer(sliced, args.workdir / "ours.parquet", model, 10_000),
        "ours emotion score fp32": lambda: run_scorer(
            sliced, args.workdir / "ours_fp32.parquet", model, 10_000, "score.precision=fp32"
        ),
    }
    for name, classify in grid.items():
        contenders[name] = lambda classify=classify: timed_pipeline(classify, texts)
    names = list(contenders)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(contenders[name]())
            print(f"round {r + 1}  {name:<34} {samples[name][-1]['texts_per_second']:8.1f} texts/s", flush=True)
    samples["ours emotion score (bf16 auto)"][0]["labels"] = scored_labels(args.workdir / "ours.parquet")
    samples["ours emotion score fp32"][0]["labels"] = scored_labels(args.workdir / "ours_fp32.parquet")
    return samples


def timed_pipeline(classify: Any, texts: list[str]) -> dict[str, Any]:
    with Timer() as timer:
        labels = classify(texts)
    return {"texts_per_second": len(texts) / timer.seconds, "labels": labels}


def speed_rows(samples: dict[str, list[dict[str, Any]]], gold: list[str]) -> dict[str, Any]:
    """Best and median texts/s, accuracy on the gold labels, and the ratios against the strongest pipeline cell."""
    rows: dict[str, dict[str, Any]] = {}
    for name, runs in samples.items():
        speeds = [run["texts_per_second"] for run in runs]
        predicted = runs[0]["labels"]
        rows[name] = {
            "texts": len(gold),
            "texts_per_second_rounds": [round(v, 1) for v in speeds],
            "texts_per_second_best": round(max(speeds), 1),
            "texts_per_second_median": round(statistics.median(speeds), 1),
            "accuracy": round(sum(p == g for p, g in zip(predicted, gold)) / len(gold), 4),
        }
    strongest = {key: best_baseline(rows, f"texts_per_second_{key}") for key in ("best", "median")}
    for row in (rows[n] for n in rows if n.startswith("ours")):
        for key, baseline in strongest.items():
            row[f"speedup_{key}"] = round(row[f"texts_per_second_{key}"] / rows[baseline][f"texts_per_second_{key}"], 2)
            default = rows[DEFAULT_PIPELINE][f"texts_per_second_{key}"]
            row[f"speedup_{key}_vs_default_pipeline"] = round(row[f"texts_per_second_{key}"] / default, 2)
    return {"contenders": rows, "strongest_baseline": strongest}


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
    write_input(full, args.rows)
    write_input(small, args.rows // 10)
    texts, gold = write_input(sliced, args.slice)
    load_before = os.getloadavg()
    runs = {}
    # peak RSS first, while this process is small: a child's ru_maxrss starts at its parent's RSS at fork
    for name, inp in (("scorer_full", full), ("scorer_tenth", small)):
        runs[name] = run_scorer(inp, args.workdir / f"{name}.parquet", model, args.chunk_size)
        print(name, runs[name], flush=True)
    runs |= compare_engines(args, model, sliced)
    speed = speed_rows(speed_rounds(args, model, sliced, texts), gold)
    peak_after = {"bf16": round(matmul_gflops(torch.bfloat16)), "fp32": round(matmul_gflops(torch.float32))}
    path = write_result(
        "bench_scoring",
        {
            "model": str(model),
            "input": f"emotion train texts repeated to {args.rows} rows (CSV in {args.workdir})",
            "chunk_size": args.chunk_size,
            "matmul_peak_gflops": peak,
            "matmul_peak_gflops_after": peak_after,
            "machine": machine() | {"load_average_before": list(load_before)},
            "speed": {"texts": args.slice, "rounds": args.rounds} | speed,
            "runs": runs,
            "peak_rss_growth_10x": round(runs["scorer_full"]["peak_rss_mib"] / runs["scorer_tenth"]["peak_rss_mib"], 2),
            "notes": "speed: both sides on the same first --slice texts, interleaved rounds, ratios against the best "
            "pipeline cell by the same measure (best or median); scorer texts/s excludes model loading; "
            "the machine was shared with other jobs (see load_average)"
            + ("" if args.rows >= 100_000 else f"; reduced run: {args.rows} rows, not the full benchmark's 100,000"),
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
