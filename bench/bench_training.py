"""Training throughput on the emotion data: the HF Trainer common recipe against our loop, lever by lever.

Same model (embedded all-MiniLM-L6-v2), same texts, same process, one run. Our loop is measured with the
Trainer's settings first (fp32, random batches of 16, fused AdamW as the Trainer's default, torch's dropout), then
adding one lever at a time: length-grouped batches with dynamic padding, bf16 autocast, cheaper dropout masks,
larger batches (fewer optimizer steps). Achieved training FLOP/s
(6 x non-embedding parameters x padded tokens, plus attention) is reported as a fraction of a bf16 matrix
multiply measured in the same run.

    python bench/bench_training.py --samples 4000

Writes bench/results/bench_training.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, matmul_gflops, write_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emotion")
    p.add_argument("--samples", type=int, default=4000, help="training samples per contender")
    p.add_argument("--model", default="embedded")
    return p.parse_args()


def flops_per_token(model_dir: str) -> tuple[float, float, int]:
    """(6 x non-embedding params, attention FLOPs per token per sequence position, hidden size)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    # forward QK^T and AV: 4 * seq * hidden per token per layer; backward twice that
    return 6.0 * non_embedding, 12.0 * config.num_hidden_layers * config.hidden_size, non_embedding


def hf_trainer(model_dir: str, texts: list[str], labels: list[int], samples: int) -> dict[str, float]:
    """The common recipe: batch 16, fp32, lr 2e-5, weight decay 0.01, 6% warmup, random batches."""
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(LABELS))
    dataset = datasets.Dataset.from_dict({"text": texts, "label": labels}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"]
    )
    steps = samples // 16

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            learning_rate=2e-5,
            weight_decay=0.01,
            warmup_steps=int(0.06 * steps),
            max_steps=steps,
            lr_scheduler_type="linear",
            save_strategy="no",
            report_to=[],
            logging_steps=50,
            use_cpu=True,
            seed=42,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[clock],
        ).train()
    return {
        "samples": steps * 16,
        "seconds": clock.seconds,
        "samples_per_second": steps * 16 / clock.seconds,
        "optimizer": str(arguments.optim),
    }


def ours(model_name: str, data: Any, samples: int, **settings: Any) -> dict[str, float]:
    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.training.train import train

    cfg = TrainConfig(
        epochs=1,
        max_steps=max(1, samples // settings["batch_size"]),
        warmup_fraction=0.06,
        weight_decay=0.01,
        resume=False,
        **settings,
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(data, ModelConfig(name=model_name, max_length=128), cfg, Path(out))
    busy = result.train_seconds - result.eval_seconds
    return {
        "samples": result.steps * settings["batch_size"],
        "seconds": busy,
        "samples_per_second": result.samples_per_second,
        "tokens_per_second": result.tokens_per_second,
    }


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import torch

    from pipeline.config import DataConfig
    from pipeline.data import encode, ingest
    from pipeline.model.modeling import resolve_model_source

    frame = ingest.normalize(ingest.read_source(DataConfig(source=str(args.data))))
    rng = np.random.default_rng(0)
    train_rows = frame[frame["split"] == "train"].iloc[
        rng.permutation((frame["split"] == "train").sum())[: args.samples]
    ]
    small_eval = frame[frame["split"] != "train"].groupby("split").head(32)  # evaluation is not what we time
    data = encode.encode(pandas_concat(train_rows, small_eval), LABELS)
    model_dir = resolve_model_source(args.model)
    per_token, attention, non_embedding = flops_per_token(model_dir)

    peak = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    print(f"matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f} GFLOP/s", flush=True)
    runs: dict[str, dict[str, float]] = {}
    runs["hf_trainer_common_recipe"] = hf_trainer(model_dir, data.texts("train"), data.label_ids("train"), args.samples)
    print("hf trainer", runs["hf_trainer_common_recipe"], flush=True)
    # the Trainer's optimizer (transformers 5, torch >= 2.8) is the fused AdamW kernel: every row uses it too
    native = dict(fast_dropout=False)
    levers = {
        "ours_fp32_random_b16": dict(
            batch_size=16, learning_rate=2e-5, precision="fp32", group_by_length=False, **native
        ),
        "ours_fp32_grouped_b16": dict(
            batch_size=16, learning_rate=2e-5, precision="fp32", group_by_length=True, **native
        ),
        "ours_bf16_grouped_b16": dict(
            batch_size=16, learning_rate=2e-5, precision="bf16", group_by_length=True, **native
        ),
        "ours_bf16_grouped_b16_fast_dropout": dict(batch_size=16, learning_rate=2e-5, precision="bf16"),
        "ours_bf16_grouped_b64_fast_dropout": dict(batch_size=64, learning_rate=1e-4, precision="bf16"),
        "ours_bf16_grouped_b128_fast_dropout": dict(batch_size=128, learning_rate=1e-4, precision="bf16"),
    }
    for name, settings in levers.items():
        runs[name] = ours(args.model, data, args.samples, **settings)
        print(name, runs[name], flush=True)

    base = runs["hf_trainer_common_recipe"]["samples_per_second"]
    for run in runs.values():
        run["speedup_vs_hf_trainer"] = run["samples_per_second"] / base
        if "tokens_per_second" in run:
            mean_len = run["tokens_per_second"] / run["samples_per_second"]
            run["gflops_per_second"] = run["tokens_per_second"] * (per_token + attention * mean_len) / 1e9
            run["fraction_of_bf16_matmul_peak"] = run["gflops_per_second"] / peak["bf16"]
            run["mean_padded_tokens_per_sample"] = mean_len
    best = max((n for n in runs if n.startswith("ours")), key=lambda n: runs[n]["samples_per_second"])
    path = write_result(
        "bench_training",
        {
            "machine": machine(),
            "model": args.model,
            "non_embedding_parameters": non_embedding,
            "samples_per_contender": args.samples,
            "matmul_peak_gflops": peak,
            "runs": runs,
            "best": best,
            "target": "best ours >= 5x hf_trainer_common_recipe samples/s",
            "met": runs[best]["speedup_vs_hf_trainer"] >= 5.0,
        },
    )
    print(
        f"best: {best} {runs[best]['samples_per_second']:.1f} samples/s = "
        f"{runs[best]['speedup_vs_hf_trainer']:.2f}x HF Trainer ({base:.1f}); "
        f"{runs[best]['fraction_of_bf16_matmul_peak']:.1%} of bf16 matmul peak -> {path}"
    )
    return 0


def pandas_concat(*frames: Any) -> Any:
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
