"""Fine-tune an encoder for single-label emotion classification, fast on CPU and GPU.

A lean loop rather than the HF Trainer: length-grouped batches with dynamic padding, bf16/fp16
autocast, AdamW with warmup and linear decay, gradient clipping, evaluation on validation each
epoch, and the best epoch by macro-F1 kept and saved.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from pipeline.calibration import calibrate
from pipeline.config import ModelConfig, TrainConfig
from pipeline.encode import PreparedData
from pipeline.inference import predict_logits
from pipeline.modeling import load_classifier, load_tokenizer, resolve_model_source
from pipeline.runtime import Runtime, choose_runtime

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float]], None]


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    best_epoch: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    calibration: dict[str, float] = field(default_factory=dict)  # temperature and validation ECE/NLL before/after


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Random batches of similar-length texts: shuffle, sort within large chunks, shuffle batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lengths.__getitem__, reverse=True)
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, foreach=True)


def _validate(model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, max_length: int) -> dict[str, float]:
    logits = predict_logits(model, tokenizer, data.texts("validation"), runtime, max_length)
    y_true = np.array(data.label_ids("validation"))
    y_pred = logits.argmax(axis=1)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_true)).item()
    return {
        "val_loss": loss,
        "val_accuracy": float(accuracy_score(y_true, y_pred)),
        "val_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def train(data: PreparedData, model_cfg: ModelConfig, cfg: TrainConfig, output_dir: Path,
          on_evaluation: EpochCallback | None = None) -> TrainResult:
    """Fine-tune ``model_cfg.name`` on the train split, select on validation, save to ``output_dir``."""
    seed_everything(cfg.seed)
    runtime = choose_runtime(cfg.device, cfg.precision)
    source = resolve_model_source(model_cfg.name)
    labels = data.label_map.labels
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, labels).to(runtime.device)
    log.info("fine-tuning %s (%d labels) on %s with %s autocast", source, len(labels), runtime.device, runtime.precision)

    encoded = tokenizer(data.texts("train"), truncation=True, max_length=model_cfg.max_length)["input_ids"]
    targets = torch.tensor(data.label_ids("train"))
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = _optimizer(model, cfg)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total_steps), max(total_steps, 1))
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.dtype is torch.float16)

    result = TrainResult(output_dir, device=str(runtime.device), precision=runtime.precision)
    best_f1, best_state = -1.0, None
    rng = random.Random(cfg.seed)
    samples, step, started = 0, 0, time.perf_counter()
    progress = tqdm(total=total_steps, desc="train", unit="step", mininterval=1.0)
    for epoch in range(1, cfg.epochs + 1):
        if step >= total_steps:
            break
        model.train()
        running, seen = 0.0, 0
        for batch in length_grouped_batches(lengths, cfg.batch_size, rng):
            if step >= total_steps:
                break
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(runtime.device)
            with runtime.autocast():
                logits = model(**inputs).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[batch].to(runtime.device))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            samples += len(batch)
            running += loss.item() * len(batch)
            seen += len(batch)
            progress.update(1)
            progress.set_postfix(loss=f"{running / seen:.4f}", samples_s=f"{samples / (time.perf_counter() - started):.1f}")
        row = {"epoch": epoch, "step": step, "train_loss": running / max(seen, 1)}
        row |= _validate(model, tokenizer, data, runtime, model_cfg.max_length)
        result.history.append(row)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})
        if on_evaluation:
            on_evaluation(row)
        if row["val_macro_f1"] > best_f1:
            best_f1, result.best_epoch = row["val_macro_f1"], epoch
            best_state = copy.deepcopy(model.state_dict())
    progress.close()
    result.steps = step
    result.train_seconds = time.perf_counter() - started
    result.samples_per_second = samples / result.train_seconds if samples else 0.0
    if best_state is not None:
        model.load_state_dict(best_state)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    val_logits = predict_logits(model, tokenizer, data.texts("validation"), runtime, model_cfg.max_length)
    result.calibration = calibrate(val_logits, np.array(data.label_ids("validation")), output_dir)
    log.info("saved model (best epoch %d, val macro-F1 %.4f, temperature %.3f) to %s", result.best_epoch, best_f1,
             result.calibration["temperature"], output_dir)
    return result
