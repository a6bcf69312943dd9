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
import pickle
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data.encode import PreparedData
from pipeline.model.calibration import calibrate, calibrate_multi_label, tune_thresholds
from pipeline.model.inference import predict_logits
from pipeline.model.modeling import load_classifier_to_train, load_tokenizer, resolve_model_source
from pipeline.model.runtime import Runtime, choose_runtime
from pipeline.ops.faults import fault_point
from pipeline.training import lora
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
    trainable_parameters: int = 0  # with LoRA: adapters and head only
    total_parameters: int = 0  # with LoRA: frozen weights and adapters


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
    model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, model_cfg: ModelConfig
) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1, judged as served (multi-label: with thresholds tuned on it)."""
    logits = _validation_logits(model, tokenizer, data, runtime, model_cfg)
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


def _validation_logits(
    model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, model_cfg: ModelConfig
) -> np.ndarray:
    texts = data.texts("validation")
    return predict_logits(model, tokenizer, texts, runtime, model_cfg.max_length, model_cfg.inference_batch_size)


def save_model(
    model: Any, tokenizer: Any, data: PreparedData, runtime: Runtime, model_cfg: ModelConfig, output_dir: Path
) -> dict[str, float]:
    """Save a folder `transformers.pipeline` loads, calibrated on validation (temperature, or per-label
    thresholds for multi-label); returns the calibration figures."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    val_logits = _validation_logits(model, tokenizer, data, runtime, model_cfg)
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


@dataclass
class _Run:
    """What the set-up built: fixed for the whole run."""

    data: PreparedData
    model_cfg: ModelConfig
    cfg: TrainConfig
    runtime: Runtime
    dist: Distributed
    tokenizer: Any
    model: torch.nn.Module
    wrapped: torch.nn.Module  # the model, or its DDP wrapper in a torchrun job
    encoded: list[list[int]]  # token ids of the train texts, unpadded
    lengths: list[int]
    targets: torch.Tensor
    class_weights: torch.Tensor | None
    soft_targets: torch.Tensor | None  # the teachers' mean probabilities on the train texts (distillation)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    total_steps: int

    def validation_scores(self) -> dict[str, float]:
        return validation_scores(self.model, self.tokenizer, self.data, self.runtime, self.model_cfg)


@dataclass
class _LoopState:
    """Where the loop stands and what it has kept; a checkpoint stores exactly these fields (same names)."""

    step: int = 0
    epoch: int = 1
    micro_done: int = 0  # micro-batches of ``epoch`` done so far
    running: tuple[float, int] = (0.0, 0)  # the epoch's summed loss x samples and sample count so far
    best_f1: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    stale: int = 0  # evaluations since the best one (early stopping)
    average: dict[str, torch.Tensor] | None = None  # running mean of the weights from epoch cfg.average_from on
    averaged: int = 0  # evaluations in ``average``
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict(): it deep-copies every tensor


@dataclass
class _Clock:
    """Throughput counters: samples and padded tokens over training time with validation taken out."""

    started: float = field(default_factory=time.perf_counter)
    samples: int = 0
    tokens: int = 0
    eval_seconds: float = 0.0

    def busy_seconds(self) -> float:
        return max(time.perf_counter() - self.started - self.eval_seconds, 1e-9)


@dataclass(frozen=True)
class _Checkpoint:
    """A run's resumable state on disk, recognised by the fingerprint of its data and settings.

    Only tensors, numbers, strings and lists/dicts/tuples of them, so it loads with ``weights_only=True``
    (no pickled code runs): the RNG state is torch's byte tensor, optimizer/scheduler/scaler state dicts hold
    tensors and plain numbers (checked for fused and foreach AdamW, bf16 and fp32).
    """

    path: Path
    fingerprint: str

    def save(self, run: _Run, state: _LoopState, epoch_done: bool) -> None:
        """Atomic write: a kill mid-save leaves the previous checkpoint intact."""
        saved = {
            "fingerprint": self.fingerprint,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        } | state.as_dict()
        if epoch_done:  # continue at the start of the next epoch
            saved |= {"epoch": state.epoch + 1, "micro_done": 0, "running": (0.0, 0)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(saved, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved state if it belongs to this run; None (start fresh) otherwise."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            log.warning("ignoring checkpoint %s: it holds more than tensors and plain values (%s)", self.path, error)
            return None
        if saved.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to other data or settings", self.path)
            return None
        return saved

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _load_model(
    model_cfg: ModelConfig, cfg: TrainConfig, data: PreparedData, runtime: Runtime, dist: Distributed
) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and classifier with a fresh head (and LoRA adapters) drawn from ``init_seed``; dropout and batch
    order then follow ``seed``."""
    source = resolve_model_source(model_cfg.name)
    labels, multi = data.label_map.labels, data.label_map.multi_label
    tokenizer = load_tokenizer(source)
    model = load_classifier_to_train(source, labels, multi, tokenizer, runtime.device, cfg.peft.quantize)
    model = lora.prepare(model, cfg)
    if cfg.init_seed is not None and cfg.init_seed != cfg.seed:
        seed_everything(cfg.seed)
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
    return tokenizer, model


def _soft_targets(
    data: PreparedData, model_cfg: ModelConfig, cfg: TrainConfig, runtime: Runtime
) -> torch.Tensor | None:
    if not cfg.teachers:
        return None
    labels, multi = data.label_map.labels, data.label_map.multi_label
    texts = data.texts("train")
    return torch.from_numpy(
        teacher_probabilities(
            cfg.teachers,
            labels,
            texts,
            runtime,
            model_cfg.max_length,
            model_cfg.inference_batch_size,
            multi,
            cfg.distill_temperature,
        )
    )


def _set_up(data: PreparedData, model_cfg: ModelConfig, cfg: TrainConfig) -> _Run:
    """Everything the loop needs, built in the order that fixes the random state of a seeded run."""
    seed_everything(cfg.seed if cfg.init_seed is None else cfg.init_seed)
    runtime = choose_runtime(cfg.device, cfg.precision)
    dist = Distributed.setup(runtime.device)
    tokenizer, model = _load_model(model_cfg, cfg, data, runtime, dist)
    encoded = tokenizer(data.texts("train"), truncation=True, max_length=model_cfg.max_length)["input_ids"]
    train_targets = data.targets("train")
    weights = class_weights(train_targets, len(data.label_map.labels), cfg.class_weights)
    soft = _soft_targets(data, model_cfg, cfg, runtime)
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(epoch_batches(lengths, cfg, 1, dist)) / cfg.grad_accumulation)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = _optimizer(model, cfg)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total_steps), max(total_steps, 1))
    wrapped = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    return _Run(
        data=data,
        model_cfg=model_cfg,
        cfg=cfg,
        runtime=runtime,
        dist=dist,
        tokenizer=tokenizer,
        model=model,
        wrapped=wrapped,
        encoded=encoded,
        lengths=lengths,
        targets=torch.from_numpy(train_targets),
        class_weights=weights.to(runtime.device) if weights is not None else None,
        soft_targets=soft,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=runtime.dtype is torch.float16),
        total_steps=total_steps,
    )


def _resume(run: _Run, checkpoint: _Checkpoint | None) -> _LoopState:
    """The loop state to start from: the checkpoint's (restoring model, optimizer and RNG too), or a fresh one."""
    saved = checkpoint.load() if checkpoint else None
    if not saved:
        return _LoopState()
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    state = _LoopState(**{f.name: saved[f.name] for f in fields(_LoopState)})
    if run.dist.is_main:
        log.info("resuming from checkpoint at step %d (epoch %d)", state.step, state.epoch)
    return state


def _micro_batch_loss(run: _Run, batch: list[int]) -> tuple[torch.Tensor, int]:
    """The training loss on one micro-batch (gold labels, blended with the teachers' when distilling) and its
    padded token count."""
    cfg, device = run.cfg, run.runtime.device
    multi = run.data.label_map.multi_label
    inputs = run.tokenizer.pad({"input_ids": [run.encoded[i] for i in batch]}, return_tensors="pt").to(device)
    with run.runtime.autocast():
        logits = run.wrapped(**inputs).logits
    loss = loss_fn(logits, run.targets[batch].to(device), multi, run.class_weights, cfg.label_smoothing)
    if run.soft_targets is not None:
        taught = distillation_loss(logits, run.soft_targets[batch].to(device), multi, cfg.distill_temperature)
        loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * taught
    return loss, inputs["input_ids"].numel()


def _optimizer_step(run: _Run, state: _LoopState, clock: _Clock, micro_batches: list[list[int]]) -> None:
    """Forward and backward over ``micro_batches`` (gradient accumulation), then one clipped AdamW step."""
    for batch in micro_batches:
        loss, tokens = _micro_batch_loss(run, batch)
        run.scaler.scale(loss / run.cfg.grad_accumulation).backward()
        loss_sum, seen = state.running
        state.running = (loss_sum + loss.item() * len(batch), seen + len(batch))
        state.micro_done += 1
        clock.samples += len(batch) * run.dist.world_size
        clock.tokens += tokens * run.dist.world_size
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    state.step += 1


def _keep(run: _Run, state: _LoopState, row: dict[str, float]) -> None:
    """Record an evaluation: the best weights so far, the early-stopping count and the weight average."""
    state.history.append(row)
    if row["val_macro_f1"] > state.best_f1:
        state.best_f1, state.best_epoch, state.stale = row["val_macro_f1"], state.epoch, 0
        state.best_state = copy.deepcopy(run.model.state_dict())
    else:
        state.stale += 1
    if run.cfg.average_from is not None and state.epoch >= run.cfg.average_from:
        state.average = running_average(state.average, run.model.state_dict(), state.averaged)
        state.averaged += 1


@dataclass(frozen=True)
class _Evaluation:
    """Evaluate-and-checkpoint, with what it needs besides the run and its state."""

    checkpoint: _Checkpoint | None
    on_evaluation: EpochCallback | None

    def __call__(self, run: _Run, state: _LoopState, clock: _Clock, epoch_done: bool) -> bool:
        """Validate, keep the best, checkpoint, report; True when early stopping says stop.

        ``epoch_done``: the checkpoint continues at the next epoch rather than after ``state.micro_done``.
        """
        started = time.perf_counter()
        loss_sum, seen = state.running
        row = {"epoch": state.epoch, "step": state.step, "train_loss": loss_sum / max(seen, 1)}
        row |= run.validation_scores()
        clock.eval_seconds += time.perf_counter() - started
        run.wrapped.train()  # validation switched dropout off; the rest of the epoch trains again
        _keep(run, state, row)
        if run.dist.is_main:
            log.info("epoch %d step %d: %s", state.epoch, state.step, {k: round(v, 4) for k, v in row.items()})
            if self.checkpoint:  # before the callback: a failing tracker must not cost this progress
                self.checkpoint.save(run, state, epoch_done)
                fault_point("train.checkpointed")
            if self.on_evaluation:
                self.on_evaluation(row)
        return run.cfg.patience is not None and state.stale >= run.cfg.patience


def _progress_bar(run: _Run, initial: int) -> Any:
    """A step bar with loss and samples/s on rank 0, only on a terminal: a log file gets no line per redraw."""
    import sys

    return tqdm(
        total=run.total_steps,
        initial=initial,
        desc="train",
        unit="step",
        mininterval=0.5,
        disable=not (run.dist.is_main and sys.stderr.isatty()),
    )


def _train_epoch(run: _Run, state: _LoopState, clock: _Clock, evaluate: _Evaluation, progress: Any) -> bool:
    """The rest of ``state.epoch``: optimizer steps, evaluations every ``eval_every`` steps and at the end;
    True when early stopping says stop."""
    cfg = run.cfg
    run.wrapped.train()
    batches = epoch_batches(run.lengths, cfg, state.epoch, run.dist)
    # a resumed epoch continues after a step, so micro_done is a multiple of grad_accumulation
    for start in range(state.micro_done, len(batches), cfg.grad_accumulation):
        _optimizer_step(run, state, clock, batches[start : start + cfg.grad_accumulation])
        loss_sum, seen = state.running
        progress.set_postfix(
            {"loss": f"{loss_sum / seen:.4f}", "samples/s": f"{clock.samples / clock.busy_seconds():.1f}"},
            refresh=False,
        )
        progress.update(1)
        if state.step >= run.total_steps:
            break
        due = cfg.eval_every and state.step % cfg.eval_every == 0
        if due and evaluate(run, state, clock, epoch_done=state.micro_done >= len(batches)):
            return True
    just_evaluated = (
        cfg.eval_every
        and state.step % cfg.eval_every == 0
        and state.history
        and state.history[-1]["step"] == state.step
    )
    return False if just_evaluated else evaluate(run, state, clock, epoch_done=True)


def _train_epochs(run: _Run, state: _LoopState, clock: _Clock, evaluate: _Evaluation) -> bool:
    """Epochs until ``epochs`` or ``max_steps`` or early stopping; True when early stopping ended training."""
    progress = _progress_bar(run, state.step)
    stop = False
    while state.epoch <= run.cfg.epochs and state.step < run.total_steps and not stop:
        stop = _train_epoch(run, state, clock, evaluate, progress)
        state.epoch, state.micro_done, state.running = state.epoch + 1, 0, (0.0, 0)
    progress.close()
    return stop


def _select(run: _Run, state: _LoopState, result: TrainResult) -> None:
    """Load the weights to save: the weight average if it beats the best single evaluation on validation, else
    the best evaluation (the last weights when there was none)."""
    result.val_macro_f1 = state.best_f1
    if state.average is not None and state.averaged >= 2:
        run.model.load_state_dict(state.average)
        averaged_f1 = run.validation_scores()["val_macro_f1"]
        result.averaged_checkpoints, result.averaged_val_macro_f1 = state.averaged, averaged_f1
        result.averaged = averaged_f1 > state.best_f1
        if run.dist.is_main:
            log.info(
                "average of %d evaluations: val macro-F1 %.4f vs best single %.4f -> keeping the %s",
                state.averaged,
                averaged_f1,
                state.best_f1,
                "average" if result.averaged else "best single",
            )
        if result.averaged:
            result.val_macro_f1 = averaged_f1
    if not result.averaged and state.best_state is not None:
        run.model.load_state_dict(state.best_state)
    result.weights_digest = weights_digest(run.model)


def _save_selected(run: _Run, state: _LoopState, result: TrainResult, checkpoint: _Checkpoint | None) -> None:
    """Save and calibrate the selected model (rank 0); a finished run clears its checkpoint to start fresh next time."""
    model = lora.export(run.model, result.model_dir)  # LoRA: adapter saved, then merged into the weights
    result.calibration = save_model(model, run.tokenizer, run.data, run.runtime, run.model_cfg, result.model_dir)
    if checkpoint:
        checkpoint.remove()
    log.info(
        "saved model (best epoch %d, val macro-F1 %.4f; calibration %s) to %s",
        state.best_epoch,
        state.best_f1,
        {k: round(v, 4) for k, v in result.calibration.items()},
        result.model_dir,
    )


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
    run = _set_up(data, model_cfg, cfg)
    checkpoint = None
    if checkpoint_dir and cfg.resume:
        print_id = fingerprint(data, model_cfg, cfg, run.dist.world_size, run.soft_targets)
        checkpoint = _Checkpoint(checkpoint_dir / CHECKPOINT_FILE, print_id)
    state = _resume(run, checkpoint)
    resumed_from_step, clock = state.step, _Clock()
    stopped = _train_epochs(run, state, clock, _Evaluation(checkpoint, on_evaluation))
    train_seconds = time.perf_counter() - clock.started
    busy = max(train_seconds - clock.eval_seconds, 1e-9)
    trainable, total = lora.parameter_counts(run.model)
    result = TrainResult(
        output_dir,
        history=state.history,
        best_epoch=state.best_epoch,
        steps=state.step,
        train_seconds=train_seconds,
        samples_per_second=clock.samples / busy if clock.samples else 0.0,
        device=str(run.runtime.device),
        precision=run.runtime.precision,
        resumed_from_step=resumed_from_step,
        world_size=run.dist.world_size,
        rank=run.dist.rank,
        stopped_early=stopped and state.step < run.total_steps,
        eval_seconds=clock.eval_seconds,
        tokens_per_second=clock.tokens / busy if clock.tokens else 0.0,
        trainable_parameters=trainable,
        total_parameters=total,
    )
    _select(run, state, result)
    if run.dist.is_main:
        _save_selected(run, state, result, checkpoint)
    return result
