"""Texts per second of our fast CPU path (each backend) against `transformers.pipeline("text-classification")`.

The baseline is the pipeline at every batch size of {1, 8, 32, 64} and dtype of {fp32, bf16} (``dtype=`` at
construction), each cell timed like a contender; ratios are taken against the best cell, best round against best
round and median against median, and against the default pipeline (fp32, batch size 1) for context.
Same model folder, same texts (the first 2000 of the emotion test split), same process, interleaved rounds
(each round runs every contender once, in a rotating order, so a noisy neighbour hurts all of them alike);
the best and the median round are reported. Accuracy on the gold labels is recorded for each contender, so
the speed of a backend is never quoted without its parity, and the best backend that passes parity is named. The
ONNX backends (ONNX Runtime, CPU) are exported and quantized before the rounds, as the server does at load:
onnx-int8 dynamically, onnx-int8-static with activation ranges calibrated on texts of the validation file
(``--calibration``, by default val.txt beside ``--data``; never the measured texts). A bf16 matrix multiply is timed
in the same run, as a yardstick of what the (shared) machine delivered.

    python bench/bench_inference.py --model /tmp/bench-proj/artifacts/latest/model
    python bench/bench_inference.py --model embedded   # the embedded MiniLM with a random 6-label head

Writes bench/results/bench_inference.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DEFAULT_PIPELINE,
    Timer,
    best_baseline,
    machine,
    matmul_gflops,
    pipeline_grid,
    read_texts,
    write_result,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="a Hugging Face model folder (trained), or 'embedded' (random head)"
    )
    p.add_argument("--tag", help="results go to bench/results/bench_inference-TAG.json instead of bench_inference.json")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a dair-ai text;label file")
    p.add_argument("-n", type=int, default=2000, help="number of texts")
    p.add_argument(
        "--backends",
        default="torch-fp32,torch-bf16,int8,onnx-fp32,onnx-int8,onnx-int8-static",
        help="our backends, comma-separated",
    )
    p.add_argument("--calibration", type=Path, help="a text;label file for static int8 (default: val.txt by --data)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best and median are reported")
    p.add_argument("--batch-size", type=int, default=64, help="our batch size (texts per forward pass)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--tolerance", type=float, default=0.003, help="parity tolerance (accuracy points / 100)")
    p.add_argument(
        "--pipeline-batch-sizes", default="1,8,32,64", help="the pipeline's batch sizes, each in fp32 and bf16"
    )
    p.add_argument("--threads", type=int, help="torch threads for every contender (default: torch's, one per core)")
    return p.parse_args()


def embedded_with_random_head(labels: list[str]) -> Path:
    """The embedded MiniLM with a seeded random classification head, saved as a model folder (speed, not quality)."""
    import tempfile

    import torch

    from pipeline.model.modeling import load_classifier, load_tokenizer, resolve_model_source

    source = resolve_model_source("embedded")
    torch.manual_seed(0)
    out = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    load_classifier(source, labels=labels).save_pretrained(out)
    load_tokenizer(source).save_pretrained(out)
    return out


def ratios(rows: dict[str, dict[str, Any]], name: str, strongest: dict[str, str]) -> dict[str, float]:
    """``name``'s texts/s over the strongest pipeline cell (best against best, median against median) and over
    the default pipeline, when it was run."""
    row = rows[name]
    out = {
        "speedup_best": round(row["texts_per_second_best"] / rows[strongest["best"]]["texts_per_second_best"], 2),
        "speedup_median": round(
            row["texts_per_second_median"] / rows[strongest["median"]]["texts_per_second_median"], 2
        ),
    }
    if DEFAULT_PIPELINE in rows:
        default = rows[DEFAULT_PIPELINE]
        out["speedup_best_vs_default_pipeline"] = round(
            row["texts_per_second_best"] / default["texts_per_second_best"], 2
        )
        out["speedup_median_vs_default_pipeline"] = round(
            row["texts_per_second_median"] / default["texts_per_second_median"], 2
        )
    return out


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    from pipeline.serving.backends import CALIBRATION_TEXTS, FP32, FastClassifier

    hf_logging.set_verbosity_error()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    texts, gold = read_texts(args.data, args.n)
    if args.model == "embedded":
        from pipeline.config import EMOTION_LABELS

        args.model = embedded_with_random_head(list(EMOTION_LABELS))
    args.model = Path(args.model)
    fp32 = FastClassifier.load(args.model, FP32, args.max_length, args.batch_size)
    labels = fp32.labels
    gold_ids = [labels.index(g) for g in gold]

    calibration = read_texts(args.calibration or args.data.with_name("val.txt"), CALIBRATION_TEXTS)[0]
    contenders: dict[str, Callable[[list[str]], list[int]]] = {}
    batch_sizes = tuple(int(b) for b in args.pipeline_batch_sizes.split(","))
    for name, classify in pipeline_grid(args.model, args.max_length, batch_sizes).items():
        contenders[name] = lambda t, classify=classify: [labels.index(label) for label in classify(t)]
    for backend in args.backends.split(","):
        clf = fp32 if backend == FP32 else fp32.converted(backend, calibration_texts=calibration)
        contenders[f"ours {backend}"] = lambda t, clf=clf: clf.predict_proba(t).argmax(axis=1).tolist()

    for run in contenders.values():  # warm up kernels and allocators
        run(texts[:64])
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    predictions: dict[str, list[int]] = {}
    names = list(contenders)
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            with Timer() as timer:
                predicted = contenders[name](texts)
            seconds[name].append(timer.seconds)
            predictions.setdefault(name, predicted)
            print(f"round {r + 1}  {name:<34} {len(texts) / timer.seconds:8.1f} texts/s", flush=True)

    def accuracy(pred: list[int]) -> float:
        return sum(p == g for p, g in zip(pred, gold_ids)) / len(gold_ids)

    fp32_acc = accuracy(predictions[f"ours {FP32}"]) if f"ours {FP32}" in predictions else None
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        best, median = min(seconds[name]), statistics.median(seconds[name])
        rows[name] = {
            "seconds": [round(s, 3) for s in seconds[name]],
            "texts_per_second_best": round(len(texts) / best, 1),
            "texts_per_second_median": round(len(texts) / median, 1),
            "accuracy": round(accuracy(predictions[name]), 4),
        }
        if name.startswith("ours") and fp32_acc is not None:
            diff = accuracy(predictions[name]) - fp32_acc
            rows[name]["accuracy_vs_fp32_points"] = round(diff * 100, 2)
            rows[name]["parity_ok"] = abs(diff) <= args.tolerance + 1e-9
    strongest = {
        "best": best_baseline(rows, "texts_per_second_best"),
        "median": best_baseline(rows, "texts_per_second_median"),
    }
    for name in names:
        if name.startswith("ours"):
            rows[name] |= ratios(rows, name, strongest)

    passing = [n for n in names if rows[n].get("parity_ok")]
    best = max(passing, key=lambda n: rows[n]["texts_per_second_median"], default=None)

    import torch

    info = machine()
    info["load_average_before"] = list(load_before)
    info["matmul_peak_gflops"] = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    print(f"matmul peak: bf16 {info['matmul_peak_gflops']['bf16']:.0f} GFLOP/s", flush=True)
    path = write_result(
        "bench_inference" + (f"-{args.tag}" if args.tag else ""),
        {
            "model": str(args.model),
            "data": str(args.data),
            "texts": len(texts),
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "labels": labels,
            "machine": info,
            "results": rows,
            "best_passing_parity": best,
            "strongest_baseline": strongest,
            "calibration": {"file": str(args.calibration or args.data.with_name("val.txt")), "texts": len(calibration)},
            "note": "best = fastest of the interleaved rounds; speedup_best = ours' best texts/s over the strongest "
            "pipeline cell's best, speedup_median = median over the strongest cell's median (each cell chosen by "
            "the same measure), same texts, same process. A shared, noisy 2-core machine: compare ratios.",
        },
    )
    print(f"\n{'contender':<34} {'best t/s':>9} {'median t/s':>11} {'accuracy':>9}  vs strongest (best / median)")
    for name, row in rows.items():
        speed = f"{row['speedup_best']:.2f}x / {row['speedup_median']:.2f}x" if "speedup_best" in row else ""
        print(
            f"{name:<34} {row['texts_per_second_best']:>9.1f} {row['texts_per_second_median']:>11.1f} "
            f"{row['accuracy']:>9.4f}  {speed}"
        )
    print(f"\nstrongest baseline: {strongest['best']} (best round), {strongest['median']} (median)")
    if best is not None:
        print(f"best backend within parity (median texts/s): {best}")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
