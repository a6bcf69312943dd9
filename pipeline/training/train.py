"""Fine-tune an encoder for emotion classification, fast on CPU and GPU.

A lean loop rather than the HF Trainer: length-grouped batches with dynamic padding, bf16/fp16 autocast,
AdamW with warmup and linear decay, gradient accumulation and clipping, optional class weights and teachers
to distil from (pipeline/training/distill.py), evaluation on validation every epoch (or N steps) keeping the best model
by macro-F1 with early stopping, resumable checkpoints, and data-parallel training under ``torchrun`` (DDP;
only rank 0 logs and saves).
Single-label models are then temperature-scaled; multi-label models get per-label thresholds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data.encode import PreparedData
from pipeline.model.calibration import calibrate, calibrate_multi_label, tune_thresholds
from pipeline.model.inference import predict_logits
from pipeline.model.modeling import load_classifier, load_tokenizer, resolve_model_source
from pipeline.model.runtime import Runtime, choose_runtime
from pipeline.training.distill import distillation_loss, teacher_probabilities
from pipeline.training.fast_dropout import use_fast_dropout

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float]], None]
CHECKPOINT_FILE = "checkpoint.pt"


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
    calibration: dict[str, float] = field(default_factory=dict)  # temperature / thresholds and validation figures
    resumed_from_step: int = 0
    world_size: int = 1
    rank: int = 0  # only rank 0 saves and logs
    stopped_early: bool = False
    eval_seconds: float = 0.0  # validation time inside train_seconds (not counted in samples_per_second)
    tokens_per_second: float = 0.0  # padded tokens through the model per second of training (for FLOP/s)
    weights_digest: str = ""  # sha256 of the final weights: equal on every rank of a DDP run
    averaged_checkpoints: int = 0  # evaluations averaged into the weight average (0 = averaging off)
    averaged_val_macro_f1: float | None = None  # the average's validation macro-F1, against the best single one
    averaged: bool = False  # True when the average won on validation and is the saved model
    val_macro_f1: float = 0.0  # validation macro-F1 of the saved model


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: random.Random, group: bool = True
) -> list[list[int]]:
    """Random batches of similar-length texts: shuffle, sort within large chunks, shuffle batch order.

    With ``group=False`` plain random batches (the usual DataLoader shuffle), for comparison.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50 if group else len(order) + 1
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        if group:
            part = sorted(part, key=lengths.__getitem__, reverse=True)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths: list[int], cfg: TrainConfig, epoch: int, dist: Distributed) -> list[list[int]]:
    """The epoch's batches for this rank; the same on every run, so a resumed epoch replays exactly."""
    batches = length_grouped_batches(
        lengths, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch), cfg.group_by_length
    )
    usable = len(batches) - len(batches) % dist.world_size if dist.world_size > 1 else len(batches)
    return batches[dist.rank : usable : dist.world_size]


def class_weights(targets: np.ndarray, n_labels: int, mode: str) -> torch.Tensor | None:
    """Inverse-frequency ('balanced') or inverse-square-root ('sqrt') weights, mean 1."""
    if mode == "none":
        return None
    counts = targets.sum(axis=0) if targets.ndim == 2 else np.bincount(targets, minlength=n_labels)
    weights = 1.0 / np.maximum(counts, 1) ** (1.0 if mode == "balanced" else 0.5)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def loss_fn(
    logits: torch.Tensor,
    targets: torch.Tensor,
    multi_label: bool,
    weights: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy for one label per text, binary cross-entropy per label for multi-label data.

    ``smoothing`` moves each target ``smoothing / 2`` towards the other side (multi-label) or spreads it over the
    classes (single-label), so the model is not pushed towards infinite logits on noisy labels.
    """
    if multi_label:
        targets = targets * (1.0 - smoothing) + smoothing / 2 if smoothing else targets
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weights)
    return torch.nn.functional.cross_entropy(logits.float(), targets, weight=weights, label_smoothing=smoothing)


def layer_depth(name: str, n_layers: int) -> int:
    """How far a parameter sits from the classifier: 0 for the head, layer L-1 -> 1, ..., embeddings -> L + 1."""
    if "embeddings" in name:
        return n_layers + 1
    found = re.search(r"\.layers?\.(\d+)\.", name)
    return n_layers - int(found.group(1)) if found else 0


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without decay on biases and norms; with ``layer_lr_decay`` < 1 lower layers take smaller steps."""
    n_layers = int(getattr(model.config, "num_hidden_layers", 0))
    grouped: dict[tuple[bool, int], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = not (param.ndim < 2 or "norm" in name.lower())
            depth = layer_depth(name, n_layers) if cfg.layer_lr_decay < 1 else 0
            grouped.setdefault((decays, depth), []).append(param)
    groups = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "lr": cfg.learning_rate * cfg.layer_lr_decay**depth,
        }
        for (decays, depth), params in sorted(grouped.items())
    ]
    # the fused kernel (CPU and CUDA) updates every tensor in one pass; foreach on CPU is a per-tensor loop
    if cfg.fused_optimizer:
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, foreach=True)


def validation_scores(
    model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, max_length: int
) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1, judged as served (multi-label: with thresholds tuned on it)."""
    logits = predict_logits(model, tokenizer, data.texts("validation"), runtime, max_length)
    y_true = data.targets("validation")
    multi = data.label_map.multi_label
    loss = loss_fn(torch.from_numpy(logits), torch.from_numpy(y_true), multi).item()
    y_true = y_true.astype(int)
    if multi:  # judged as it will be served: with per-label thresholds tuned on validation
        probs = expit(logits)
        y_pred = (probs >= tune_thresholds(probs, y_true)).astype(int)
    else:
        y_pred = logits.argmax(axis=1)
    return {
        "val_loss": loss,
        "val_accuracy": float(accuracy_score(y_true, y_pred)),
        "val_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def save_model(
    model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, max_length: int, output_dir: Path
) -> dict[str, float]:
    """Save a folder `transformers.pipeline` loads, calibrated on validation (temperature, or per-label
    thresholds for multi-label); returns the calibration figures."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    val_logits = predict_logits(model, tokenizer, data.texts("validation"), runtime, max_length)
    calibrate_fn = calibrate_multi_label if data.label_map.multi_label else calibrate
    return calibrate_fn(val_logits, data.targets("validation"), output_dir)


def fingerprint(
    data: PreparedData,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    world_size: int,
    soft_targets: torch.Tensor | None = None,
) -> str:
    """What a checkpoint belongs to: the data, the model, every setting that changes the trajectory, and the
    teachers' soft targets (a teacher retrained in the same folder must not be resumed into)."""
    digest = hashlib.sha256()
    for split in ("train", "validation"):
        digest.update("\n".join(data.texts(split)).encode())
        digest.update(np.ascontiguousarray(data.targets(split)).tobytes())
    if soft_targets is not None:
        digest.update(soft_targets.numpy().tobytes())
    settings = model_cfg.model_dump() | cfg.model_dump(exclude={"checkpoint_dir", "resume", "patience"})
    digest.update(json.dumps(settings | {"world_size": world_size}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def running_average(
    average: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor], count: int
) -> dict[str, torch.Tensor]:
    """The mean of ``count`` earlier weight snapshots updated with ``state`` (integer buffers are copied)."""
    if average is None:
        return {k: v.detach().clone() for k, v in state.items()}
    for key, value in state.items():
        if value.is_floating_point():
            average[key] += (value.detach() - average[key]) / (count + 1)
    return average


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: a kill mid-save leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != expected:
        log.warning("ignoring checkpoint %s: it belongs to other data or settings", path)
        return None
    return state


def train(
    data: PreparedData,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    output_dir: Path,
    on_evaluation: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune ``model_cfg.name`` on the train split, select on validation, save to ``output_dir``.

    With ``checkpoint_dir`` the state is saved at every evaluation and a restarted call resumes from it.
    """
    seed_everything(cfg.seed if cfg.init_seed is None else cfg.init_seed)
    runtime = choose_runtime(cfg.device, cfg.precision)
    dist = Distributed.setup(runtime.device)
    source = resolve_model_source(model_cfg.name)
    labels = data.label_map.labels
    multi = data.label_map.multi_label
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, labels, multi).to(runtime.device)
    if cfg.init_seed is not None and cfg.init_seed != cfg.seed:
        seed_everything(cfg.seed)  # the head came from init_seed; dropout and batch order follow seed
    if cfg.fast_dropout and runtime.device.type == "cpu":
        use_fast_dropout(model)  # torch's per-element CPU dropout RNG was ~1/5 of a bf16 step here
    if dist.is_main:
        log.info(
            "fine-tuning %s (%d labels, %s) on %s x%d with %s autocast",
            source,
            len(labels),
            "multi-label" if multi else "single-label",
            runtime.device,
            dist.world_size,
            runtime.precision,
        )

    encoded = tokenizer(data.texts("train"), truncation=True, max_length=model_cfg.max_length)["input_ids"]
    train_targets = data.targets("train")
    targets = torch.from_numpy(train_targets)
    weights = class_weights(train_targets, len(labels), cfg.class_weights)
    weights = weights.to(runtime.device) if weights is not None else None
    soft = None
    if cfg.teachers:
        soft = torch.from_numpy(
            teacher_probabilities(
                cfg.teachers, labels, data.texts("train"), runtime, model_cfg.max_length, multi, cfg.distill_temperature
            )
        )
    lengths = [len(ids) for ids in encoded]
    micro_per_epoch = len(epoch_batches(lengths, cfg, 1, dist))
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accumulation)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = _optimizer(model, cfg)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total_steps), max(total_steps, 1))
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.dtype is torch.float16)
    wrapped = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )

    result = TrainResult(
        output_dir, device=str(runtime.device), precision=runtime.precision, world_size=dist.world_size, rank=dist.rank
    )
    best_f1, best_state, stale = -1.0, None, 0
    average, averaged = None, 0  # running mean of the weights at evaluations from epoch cfg.average_from on
    step, epoch, skip = 0, 1, 0  # skip: micro-batches of `epoch` already done (when resuming)
    resumed_running = (0.0, 0)  # the epoch's loss sum and sample count up to the checkpoint
    checkpoint = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir and cfg.resume else None
    print_id = fingerprint(data, model_cfg, cfg, dist.world_size, soft) if checkpoint else ""
    state = _load_checkpoint(checkpoint, print_id) if checkpoint else None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        step, epoch, skip = state["step"], state["epoch"], state["micro_done"]
        resumed_running = state["running"]
        best_f1, best_state, stale = state["best_f1"], state["best_state"], state["stale"]
        average, averaged = state["average"], state["averaged"]
        result.history, result.best_epoch, result.resumed_from_step = state["history"], state["best_epoch"], step
        if dist.is_main:
            log.info("resuming from checkpoint at step %d (epoch %d)", step, epoch)

    def evaluate_now(micro_done: int, n_micro: int, running: float, seen: int) -> bool:
        """Validate, keep the best, checkpoint; True when early stopping says stop."""
        nonlocal best_f1, best_state, stale, average, averaged
        eval_started = time.perf_counter()
        row = {"epoch": epoch, "step": step, "train_loss": running / max(seen, 1)}
        row |= validation_scores(model, tokenizer, data, runtime, model_cfg.max_length)
        result.eval_seconds += time.perf_counter() - eval_started
        wrapped.train()  # validation switched dropout off; the rest of the epoch trains again
        result.history.append(row)
        if row["val_macro_f1"] > best_f1:
            best_f1, result.best_epoch, stale = row["val_macro_f1"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if cfg.average_from is not None and epoch >= cfg.average_from:
            average, averaged = running_average(average, model.state_dict(), averaged), averaged + 1
        if dist.is_main:
            log.info("epoch %d step %d: %s", epoch, step, {k: round(v, 4) for k, v in row.items()})
            if checkpoint:  # before the callback: a failing tracker must not cost this progress
                _save_checkpoint(
                    checkpoint,
                    {
                        "fingerprint": print_id,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "step": step,
                        # where to continue: the next micro-batch of this epoch, or the start of the next one
                        "epoch": epoch + 1 if micro_done >= n_micro else epoch,
                        "micro_done": 0 if micro_done >= n_micro else micro_done,
                        "running": (0.0, 0) if micro_done >= n_micro else (running, seen),
                        "best_f1": best_f1,
                        "best_state": best_state,
                        "stale": stale,
                        "history": result.history,
                        "best_epoch": result.best_epoch,
                        "average": average,
                        "averaged": averaged,
                    },
                )
            if on_evaluation:
                on_evaluation(row)
        return cfg.patience is not None and stale >= cfg.patience

    samples, tokens, started = 0, 0, time.perf_counter()
    progress = tqdm(
        total=total_steps, initial=step, desc="train", unit="step", mininterval=1.0, disable=not dist.is_main
    )
    stop = False
    while epoch <= cfg.epochs and step < total_steps and not stop:
        wrapped.train()
        batches = epoch_batches(lengths, cfg, epoch, dist)
        running, seen = resumed_running if skip else (0.0, 0)
        for micro, batch in enumerate(batches):
            if micro < skip:
                continue
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(runtime.device)
            with runtime.autocast():
                logits = wrapped(**inputs).logits
            loss = loss_fn(logits, targets[batch].to(runtime.device), multi, weights, cfg.label_smoothing)
            if soft is not None:
                taught = distillation_loss(logits, soft[batch].to(runtime.device), multi, cfg.distill_temperature)
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * taught
            scaler.scale(loss / cfg.grad_accumulation).backward()
            running += loss.item() * len(batch)
            seen += len(batch)
            samples += len(batch) * dist.world_size
            tokens += inputs["input_ids"].numel() * dist.world_size
            if (micro + 1) % cfg.grad_accumulation and micro + 1 != len(batches):
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            progress.update(1)
            busy = time.perf_counter() - started - result.eval_seconds
            progress.set_postfix(loss=f"{running / seen:.4f}", samples_s=f"{samples / busy:.1f}")
            if step >= total_steps:
                break
            if cfg.eval_every and step % cfg.eval_every == 0 and evaluate_now(micro + 1, len(batches), running, seen):
                stop = True
                break
        skip = 0
        if not stop and not (
            cfg.eval_every and step % cfg.eval_every == 0 and result.history and result.history[-1]["step"] == step
        ):
            stop = evaluate_now(len(batches), len(batches), running, seen) or stop
        epoch += 1
    progress.close()
    result.stopped_early = stop and step < total_steps
    result.steps = step
    result.train_seconds = time.perf_counter() - started
    busy = max(result.train_seconds - result.eval_seconds, 1e-9)
    result.samples_per_second = samples / busy if samples else 0.0
    result.tokens_per_second = tokens / busy if tokens else 0.0
    if averaged >= 2:  # the weight average competes with the best single evaluation, on validation only
        model.load_state_dict(average)
        result.averaged_checkpoints = averaged
        result.averaged_val_macro_f1 = validation_scores(model, tokenizer, data, runtime, model_cfg.max_length)[
            "val_macro_f1"
        ]
        result.averaged = result.averaged_val_macro_f1 > best_f1
        if dist.is_main:
            log.info(
                "average of %d evaluations: val macro-F1 %.4f vs best single %.4f -> keeping the %s",
                averaged,
                result.averaged_val_macro_f1,
                best_f1,
                "average" if result.averaged else "best single",
            )
    if not result.averaged and best_state is not None:
        model.load_state_dict(best_state)
    result.val_macro_f1 = result.averaged_val_macro_f1 if result.averaged else best_f1
    result.weights_digest = weights_digest(model)
    if dist.is_main:
        result.calibration = save_model(model, tokenizer, data, runtime, model_cfg.max_length, output_dir)
        if checkpoint and checkpoint.exists():
            checkpoint.unlink()  # finished: the next run starts fresh
        log.info(
            "saved model (best epoch %d, val macro-F1 %.4f; calibration %s) to %s",
            result.best_epoch,
            best_f1,
            {k: round(v, 4) for k, v in result.calibration.items()},
            output_dir,
        )
    return result
