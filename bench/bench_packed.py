"""Packed against padded BERT inference (pipeline/model/packed.py), on the same model, texts and threads.

Two shapes, interleaved rounds, best and median, the bf16 matmul peak of the same run:
- the engine's: all texts in input order at once, torch's 2 threads, padded batches of 64 length-sorted texts
  against packed batches of the same token budget;
- a server process's: one torch thread, the texts shuffled and handed over ``--group`` at a time (what 16 waiting
  requests give one of two workers at 32 clients), padded batches of 8 sorted within the group against one packed
  forward pass per group.
Probabilities of both paths are compared on all texts (largest difference, argmax agreement).

``--train-data FILE`` also reports the share of real tokens in the training loop's batches (length-grouped as
``train.group_by_length`` makes them, and plain random ones): the most packing could save in training.

    .venv/bin/python bench/bench_packed.py --model /tmp/bench-proj/artifacts/latest/model \
        --data ../shared/data/emotion/test.txt --backend torch-bf16
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine, matmul_gflops, read_texts, write_result


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a trained model folder")
    p.add_argument("--data", type=Path, required=True, help="a dair-ai text;label file")
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--backend", default="torch-bf16", help="torch-fp32 | torch-bf16 | int8")
    p.add_argument("--group", type=int, default=16, help="texts handed to a server process at once")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-data", type=Path, help="a dair-ai training file: the real-token share of its batches")
    p.add_argument("--tag", default="")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    import numpy as np
    import torch

    from pipeline.model import inference
    from pipeline.serving.backends import FP32, FastClassifier

    peak = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    print(f"matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f}", flush=True)
    texts, _ = read_texts(args.data, args.texts)
    shuffled = random.Random(0).sample(texts, len(texts))

    def classifier(batch_size: int) -> Any:
        fp32 = FastClassifier.load(args.model, FP32, 128, batch_size)
        return fp32 if args.backend == FP32 else fp32.converted(args.backend)

    engine, server = classifier(64), classifier(8)
    packable = inference.packable

    def path(packed: bool) -> None:
        inference.packable = packable if packed else (lambda model: False)

    path(False)
    padded_probs = engine.predict_proba(texts)
    path(True)
    packed_probs = engine.predict_proba(texts)
    parity = {
        "max_abs_probability_difference": float(np.abs(packed_probs - padded_probs).max()),
        "argmax_agreement": float((packed_probs.argmax(1) == padded_probs.argmax(1)).mean()),
    }
    print(f"packed vs padded: {parity}", flush=True)

    def in_groups() -> None:
        for i in range(0, len(shuffled), args.group):
            server.predict_proba(shuffled[i : i + args.group])

    shapes: dict[str, tuple[int, Callable[[], Any]]] = {
        "engine (2 threads, all texts)": (2, lambda: engine.predict_proba(texts)),
        f"server process (1 thread, groups of {args.group})": (1, in_groups),
    }
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for shape, (threads, run) in shapes.items():
            torch.set_num_threads(threads)
            for packed in (False, True):
                path(packed)
                started = time.perf_counter()
                run()
                key = f"{shape}, {'packed' if packed else 'padded'}"
                rates.setdefault(key, []).append(len(texts) / (time.perf_counter() - started))
    path(True)
    rows = {k: {"best": round(max(v), 1), "median": round(statistics.median(v), 1)} for k, v in rates.items()}
    for key, row in rows.items():
        print(f"{key:58s} best {row['best']:7.1f}  median {row['median']:7.1f} texts/s")
    padding = training_padding(args.train_data, engine.predictor.tokenizer) if args.train_data else None
    name = "bench_packed" + (f"-{args.tag}" if args.tag else "")
    info = machine() | {"matmul_peak_gflops": peak}
    payload = {"backend": args.backend, "texts": len(texts), "group": args.group, "rounds": args.rounds}
    path_written = write_result(
        name,
        payload | {"parity": parity, "texts_per_second": rows, "training_real_token_share": padding, "machine": info},
    )
    print(f"wrote {path_written}")
    return 0


def training_padding(train_file: Path, tokenizer: Any) -> dict[str, float]:
    """Real tokens / padded tokens over one epoch of the training loop's batches, by batch size and grouping."""
    from pipeline.training.train import length_grouped_batches

    rows = sum(1 for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip())
    texts, _ = read_texts(train_file, rows)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
    shares = {}
    for size in (16, 32, 64):
        for grouped in (True, False):
            batches = length_grouped_batches(lengths, size, random.Random(0), grouped)
            padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
            shares[f"batch {size}, {'length-grouped' if grouped else 'random'}"] = round(sum(lengths) / padded, 3)
    for key, share in shares.items():
        print(f"training batches, {key}: {share:.1%} of the tokens are real")
    return shares


if __name__ == "__main__":
    raise SystemExit(main())
