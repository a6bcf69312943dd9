"""Training throughput on the emotion data: our loop against the HF Trainer's strongest configuration, same run.

Same model (embedded all-MiniLM-L6-v2), same training texts, same process, interleaved rounds (each round runs
every contender once, in a rotating order, so a noisy neighbour hurts all of them alike); best and median
samples/s are reported. The headline baseline is the Trainer as a user who wants speed would run it: ``bf16=True``,
``train_sampling_strategy="group_by_length"`` (transformers 5's name for ``group_by_length=True``) and the batch
size, learning rate, schedule (6% linear warmup, linear decay), weight decay, steps and max_length of our loop; its
common recipe (batch 16, fp32, lr 2e-5, random batches) is kept as context, run in the first round only (it is
the slowest by far and no ratio of the headline depends on it). ``--compile`` adds the strongest
configuration with ``torch_compile=True``. Each contender's model is scored on the same validation texts (macro-F1
with a 95% bootstrap interval) so speed is compared at a quality that can be checked. Achieved training FLOP/s
of our loop (6 x non-embedding parameters x padded tokens, plus attention) is reported as a fraction of a bf16
matrix multiply measured in the same run.

    python bench/bench_training.py --samples 4000 --rounds 2

Writes bench/results/bench_training.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, matmul_gflops, write_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
MAX_LENGTH = 128
WARMUP_FRACTION = 0.06
WEIGHT_DECAY = 0.01
BEST_BATCH, BEST_LR = 64, 1e-4  # our loop's bench settings, given to the Trainer's strongest configuration too
HEADLINE_OURS, HEADLINE_TRAINER = "ours_bf16_grouped_b64_fast_dropout", "hf_trainer_bf16_grouped_b64"
CONTEXT = "hf_trainer_common_recipe"  # batch 16, fp32, lr 2e-5, random batches: context, first round only


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emotion")
    p.add_argument("--samples", type=int, default=4000, help="training samples per contender (one pass)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best and median are reported")
    p.add_argument("--validation", type=int, default=2000, help="validation texts every contender is scored on")
    p.add_argument("--compile", action="store_true", help="also the strongest Trainer with torch_compile=True")
    p.add_argument("--contenders", help="comma-separated subset of the contenders (default: all)")
    p.add_argument("--tag", help="results go to bench/results/bench_training-TAG.json")
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


def validation_predictions(model: Any, tokenizer: Any, texts: list[str]) -> list[int]:
    """Class ids of ``texts`` in fp32, batches of 64 sorted by length: one scorer for every contender's model."""
    import torch

    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    predicted = [0] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            inputs = tokenizer(
                [texts[i] for i in batch], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
            )
            for i, label in zip(batch, model(**inputs).logits.float().argmax(dim=1).tolist()):
                predicted[i] = label
    return predicted


def hf_trainer(
    model_dir: str, texts: list[str], labels: list[int], samples: int, val_texts: list[str], **settings: Any
) -> dict[str, Any]:
    """One Trainer run of ``samples`` samples at ``settings`` (batch_size, learning_rate, bf16, grouped, compile),
    6% linear warmup and decay, weight decay 0.01; timed from the start to the end of training."""
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
        lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True, remove_columns=["text"]
    )
    batch = settings["batch_size"]
    steps = samples // batch

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            learning_rate=settings["learning_rate"],
            weight_decay=WEIGHT_DECAY,
            warmup_steps=int(WARMUP_FRACTION * steps),
            max_steps=steps,
            lr_scheduler_type="linear",
            bf16=settings["bf16"],
            train_sampling_strategy="group_by_length" if settings["grouped"] else "random",
            torch_compile=settings.get("compile", False),
            save_strategy="no",
            report_to=[],
            logging_steps=50,
            use_cpu=True,
            seed=42,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[clock],
        )
        trainer.train()
    return {
        "samples": steps * batch,
        "seconds": clock.seconds,
        "samples_per_second": steps * batch / clock.seconds,
        "optimizer": str(arguments.optim),
        "val_predictions": validation_predictions(model, tokenizer, val_texts),
    }


def ours(model_name: str, data: Any, samples: int, val_texts: list[str], **settings: Any) -> dict[str, Any]:
    """One run of our loop over ``samples`` samples; its samples/s leave out its own validation passes."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.training.train import train

    cfg = TrainConfig(
        epochs=1,
        max_steps=max(1, samples // settings["batch_size"]),
        warmup_fraction=WARMUP_FRACTION,
        weight_decay=WEIGHT_DECAY,
        resume=False,
        **settings,
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(data, ModelConfig(name=model_name, max_length=MAX_LENGTH), cfg, Path(out))
        model = AutoModelForSequenceClassification.from_pretrained(out)
        predicted = validation_predictions(model, AutoTokenizer.from_pretrained(out), val_texts)
    return {
        "samples": result.steps * settings["batch_size"],
        "seconds": result.train_seconds - result.eval_seconds,
        "samples_per_second": result.samples_per_second,
        "tokens_per_second": result.tokens_per_second,
        "val_predictions": predicted,
    }


def contenders(compile_trainer: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (runner, settings). The Trainer's strongest configuration has our loop's batch, lr and schedule."""
    trainer_best = dict(batch_size=BEST_BATCH, learning_rate=BEST_LR, bf16=True, grouped=True)
    ours_best = dict(batch_size=BEST_BATCH, learning_rate=BEST_LR, precision="bf16", group_by_length=True)
    table: dict[str, tuple[str, dict[str, Any]]] = {
        CONTEXT: ("trainer", dict(batch_size=16, learning_rate=2e-5, bf16=False, grouped=False)),
        HEADLINE_TRAINER: ("trainer", trainer_best),
        "ours_bf16_grouped_b64": ("ours", ours_best | dict(fast_dropout=False)),
        HEADLINE_OURS: ("ours", ours_best | dict(fast_dropout=True)),
    }
    if compile_trainer:
        table["hf_trainer_bf16_grouped_b64_compiled"] = ("trainer", trainer_best | dict(compile=True))
    return table


def macro_f1_with_interval(gold: list[int], predicted: list[int]) -> dict[str, Any]:
    """Validation macro-F1 and its 95% percentile-bootstrap interval (1000 resamples of the validation texts)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from pipeline.evaluation.intervals import metric_intervals

    y_true, y_pred = np.array(gold), np.array(predicted)
    low, high = metric_intervals(y_true, y_pred, LABELS, None, 1000, 0.95, 0)["macro_f1"]
    return {
        "val_macro_f1": round(
            float(f1_score(y_true, y_pred, labels=range(len(LABELS)), average="macro", zero_division=0)), 4
        ),
        "val_macro_f1_interval": [round(low, 4), round(high, 4)],
        "val_accuracy": round(float((y_true == y_pred).mean()), 4),
    }


def summarize(samples: list[dict[str, Any]], gold: list[int]) -> dict[str, Any]:
    """Best and median samples/s over the rounds, quality from the first round's model."""
    speeds = [s["samples_per_second"] for s in samples]
    row: dict[str, Any] = {
        "samples_per_second_rounds": [round(v, 1) for v in speeds],
        "samples_per_second_best": round(max(speeds), 1),
        "samples_per_second_median": round(statistics.median(speeds), 1),
        "samples": samples[0]["samples"],
        **macro_f1_with_interval(gold, samples[0]["val_predictions"]),
    }
    if "tokens_per_second" in samples[0]:
        row["padded_tokens_per_sample"] = round(samples[0]["tokens_per_second"] / speeds[0], 1)
    if "optimizer" in samples[0]:
        row["optimizer"] = samples[0]["optimizer"]
    return row


def add_ratios(rows: dict[str, dict[str, Any]], baselines: list[str]) -> None:
    """Speed-ups of every row against each baseline: best against best, median against median."""
    for row in rows.values():
        row["speedup_best"] = {
            b: round(row["samples_per_second_best"] / rows[b]["samples_per_second_best"], 2) for b in baselines
        }
        row["speedup_median"] = {
            b: round(row["samples_per_second_median"] / rows[b]["samples_per_second_median"], 2) for b in baselines
        }


def add_flops(row: dict[str, Any], per_token: float, attention: float, peak_bf16: float) -> None:
    """Achieved training GFLOP/s (padded tokens) of the best round, as a share of the bf16 matmul peak."""
    tokens = row["padded_tokens_per_sample"]
    row["gflops_per_second_best"] = round(
        row["samples_per_second_best"] * tokens * (per_token + attention * tokens) / 1e9
    )
    row["fraction_of_bf16_matmul_peak_best"] = round(row["gflops_per_second_best"] / peak_bf16, 3)


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from pipeline.config import DataConfig
    from pipeline.data import encode, ingest
    from pipeline.model.modeling import resolve_model_source

    hf_logging.set_verbosity_error()
    frame = ingest.normalize(ingest.read_source(DataConfig(source=str(args.data))))
    rng = np.random.default_rng(0)
    train_rows = frame[frame["split"] == "train"].iloc[
        rng.permutation((frame["split"] == "train").sum())[: args.samples]
    ]
    small_eval = frame[frame["split"] != "train"].groupby("split").head(32)  # the loop's own evaluation: not timed
    data = encode.encode(pandas_concat(train_rows, small_eval), LABELS)
    validation = frame[frame["split"] == "validation"].head(args.validation)
    val_texts, val_gold = validation["text"].tolist(), [LABELS.index(v) for v in validation["label"]]
    model_dir = resolve_model_source(args.model)
    per_token, attention, non_embedding = flops_per_token(model_dir)

    peak = {"bf16": round(matmul_gflops(torch.bfloat16)), "fp32": round(matmul_gflops(torch.float32))}
    print(f"matmul peak: bf16 {peak['bf16']} GFLOP/s, fp32 {peak['fp32']} GFLOP/s", flush=True)
    table = contenders(args.compile)
    if args.contenders:
        table = {name: table[name] for name in args.contenders.split(",")}
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "trainer": lambda **s: hf_trainer(
            model_dir, data.texts("train"), data.label_ids("train"), args.samples, val_texts, **s
        ),
        "ours": lambda **s: ours(args.model, data, args.samples, val_texts, **s),
    }
    names = list(table)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name == CONTEXT and r > 0:
                continue
            runner, settings = table[name]
            samples[name].append(runners[runner](**settings))
            print(f"round {r + 1}  {name:<40} {samples[name][-1]['samples_per_second']:7.1f} samples/s", flush=True)
    peak_after = {"bf16": round(matmul_gflops(torch.bfloat16)), "fp32": round(matmul_gflops(torch.float32))}
    rows = {name: summarize(samples[name], val_gold) for name in names}
    add_ratios(rows, [b for b in (CONTEXT, HEADLINE_TRAINER) if b in rows])
    for name in names:
        rows[name]["settings"] = table[name][1]
        if "padded_tokens_per_sample" in rows[name]:
            add_flops(rows[name], per_token, attention, peak["bf16"])
    info = machine() | {"load_average_before": list(load_before)}
    path = write_result(
        "bench_training" + (f"-{args.tag}" if args.tag else ""),
        {
            "machine": info,
            "model": args.model,
            "non_embedding_parameters": non_embedding,
            "samples_per_contender": args.samples,
            "max_length": MAX_LENGTH,
            "rounds": args.rounds,
            "validation_texts": len(val_texts),
            "matmul_peak_gflops": peak,
            "matmul_peak_gflops_after": peak_after,
            "runs": rows,
            "headline": {"ours": HEADLINE_OURS, "baseline": HEADLINE_TRAINER},
            "note": "one pass over the same training texts per contender; best = fastest round, median over the "
            "rounds; validation macro-F1 from the first round's model, fp32, same validation texts for all",
        },
    )
    print(f"\n{'contender':<40} {'best':>7} {'median':>7} {'val F1':>7}  interval")
    for name, row in rows.items():
        print(
            f"{name:<40} {row['samples_per_second_best']:>7.1f} {row['samples_per_second_median']:>7.1f} "
            f"{row['val_macro_f1']:>7.4f}  {row['val_macro_f1_interval']}"
        )
    if HEADLINE_OURS in rows and HEADLINE_TRAINER in rows:
        head = rows[HEADLINE_OURS]
        print(
            f"{HEADLINE_OURS} vs {HEADLINE_TRAINER}: {head['speedup_best'][HEADLINE_TRAINER]}x best, "
            f"{head['speedup_median'][HEADLINE_TRAINER]}x median; peak bf16 {peak['bf16']} GFLOP/s -> {path}"
        )
    return 0


def pandas_concat(*frames: Any) -> Any:
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
