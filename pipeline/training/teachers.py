"""Teachers trained inside a run, then one student that learns from them (``train.distill``).

The plan is fixed by the config before anything trains: one teacher per seed, each with the student's settings
(``teacher_overrides`` changed), its own model folder under the run's artifacts and its own checkpoint folder, so
teachers can train side by side and a restarted run resumes each one. The student is the run's model: its
``train.teachers`` name the teachers' folders from the start, so the run's parameters say what it learnt from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data.encode import PreparedData
from pipeline.errors import PipelineError
from pipeline.training.train import EpochCallback, TrainResult, train

log = logging.getLogger(__name__)

TEACHERS_DIR = "teachers"  # under the run's artifacts and under train.checkpoint_dir


@dataclass(frozen=True)
class Teacher:
    seed: int
    train: TrainConfig
    model_dir: Path
    checkpoint_dir: Path

    @property
    def name(self) -> str:
        return f"seed{self.seed}"


@dataclass(frozen=True)
class TaughtTeacher:
    """What the run keeps of a trained teacher: where it is, its MLflow child run and its validation score."""

    name: str
    model_dir: str
    run_id: str
    val_macro_f1: float
    train_seconds: float


def plan(train_cfg: TrainConfig, artifacts_root: Path, checkpoints_root: Path) -> list[Teacher]:
    """The teachers ``train.distill.teacher_seeds`` asks for, in seed order as given ([] = no distillation run),
    with their models and checkpoints inside the run's folders."""
    models, checkpoints = artifacts_root / TEACHERS_DIR, checkpoints_root / TEACHERS_DIR
    return [
        Teacher(seed, train_cfg.teacher(seed), models / f"seed{seed}", checkpoints / f"seed{seed}")
        for seed in train_cfg.distill.teacher_seeds
    ]


def student_config(train_cfg: TrainConfig, teachers: list[Teacher]) -> TrainConfig:
    """The student's train settings: the saved ``train.teachers`` plus the teachers trained in the run."""
    if not teachers:
        return train_cfg
    folders = [*train_cfg.teachers, *(str(t.model_dir) for t in teachers)]
    return train_cfg.model_copy(update={"teachers": folders})


def check_student_config(train_cfg: TrainConfig, artifacts_root: Path, checkpoints_root: Path) -> None:
    """Refuse to train a model that should learn from teachers not trained yet (``emotion train`` and its DVC stage
    train one model; the training flow trains the teachers first and passes the student's config)."""
    missing = [
        t.name for t in plan(train_cfg, artifacts_root, checkpoints_root) if str(t.model_dir) not in train_cfg.teachers
    ]
    if missing:
        raise PipelineError(
            f"train.distill.teacher_seeds asks for teachers ({', '.join(missing)}) trained in the run: `emotion run` "
            "trains them, then the student; to train one model from saved teachers, list their folders in "
            "train.teachers and set train.distill.teacher_seeds=[]"
        )


def threads_per_teacher(parallelism: int, device: str) -> int | None:
    """Torch threads for each of ``parallelism`` teachers training at once on CPU, so they share the cores
    instead of fighting over them (None: leave torch's default, one teacher or a GPU)."""
    if parallelism == 1 or device == "cuda":
        return None
    return max(1, (os.cpu_count() or 1) // parallelism)


def train_teacher(
    teacher: Teacher,
    data: PreparedData,
    model_cfg: ModelConfig,
    on_evaluation: EpochCallback | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train one teacher into its folder; any failure becomes a PipelineError that names the teacher."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        return train(data, model_cfg, teacher.train, teacher.model_dir, on_evaluation, teacher.checkpoint_dir)
    except Exception as exc:
        log.exception("teacher %s failed", teacher.name)  # the traceback goes to the run log
        raise PipelineError(
            f"teacher {teacher.name} failed ({type(exc).__name__}: {exc}); the student was not trained and "
            "nothing was registered"
        ) from exc


def result_metrics(result: TrainResult) -> dict[str, float]:
    """A teacher's figures for its MLflow run (its per-evaluation curve is logged while it trains)."""
    return {
        "selected_val_macro_f1": result.val_macro_f1,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "train_samples_per_second": result.samples_per_second,
        **result.calibration,
    }
