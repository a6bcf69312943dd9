"""The teacher plan of a distillation run (train.distill): its validation, folders and the student's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.training import teachers
from tests.conftest import PARAMS


def config(tmp_path: Path, *overrides: str):
    return load_config(PARAMS, [f"project_dir={tmp_path}", *overrides], environ={})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.distill.teacher_seeds=[1, 2, 1]"], "teacher_seeds [1, 2, 1] repeats a seed"),
        (["train.seed=2", "train.distill.teacher_seeds=[1, 2]"], "the student's seed 2 is also a teacher seed"),
        (["train.distill.teacher_seeds=[1]", "train.distill_weight=0"], "the student would ignore its teachers"),
        (["train.distill.teacher_seeds=[1]", "train.distill.teacher_overrides={seed: 3}"], "cannot set ['seed']"),
        (["train.distill.teacher_seeds=[1]", "train.distill.teacher_overrides={epoch: 3}"], "epoch: Extra inputs"),
        (["train.distill.teacher_seeds=[1]", "train.distill.teacher_overrides={epochs: 0}"], "epochs: Input should be"),
        (["train.distill.teacher_seeds=[1]", "train.distill.parallelism=0"], "parallelism"),
    ],
)
def test_a_teacher_plan_that_cannot_work_is_refused_with_the_reason(tmp_path: Path, overrides, message) -> None:
    with pytest.raises(PipelineError) as refused:
        config(tmp_path, *overrides)
    assert message in str(refused.value)


def test_plan_gives_each_teacher_its_seed_folders_and_the_overrides(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "train.seed=9",
        "train.epochs=5",
        "train.teachers=[/saved/teacher]",
        "train.distill.teacher_seeds=[3, 1]",
        "train.distill.teacher_overrides={epochs: 2, learning_rate: 0.01}",
    )
    plan = teachers.plan(cfg.train, tmp_path / "artifacts", tmp_path / "artifacts" / "checkpoints")

    assert [t.name for t in plan] == ["seed3", "seed1"]
    assert [t.model_dir for t in plan] == [tmp_path / "artifacts" / "teachers" / f"seed{s}" for s in (3, 1)]
    assert [t.checkpoint_dir for t in plan] == [
        tmp_path / "artifacts" / "checkpoints" / "teachers" / f"seed{s}" for s in (3, 1)
    ]
    first = plan[0].train
    assert (first.seed, first.epochs, first.learning_rate, first.teachers) == (3, 2, 0.01, [])
    assert first.distill.teacher_seeds == [] and first.batch_size == cfg.train.batch_size

    student = teachers.student_config(cfg.train, plan)
    assert (student.seed, student.epochs) == (9, 5)
    assert student.teachers == ["/saved/teacher", *(str(t.model_dir) for t in plan)]
    assert teachers.student_config(cfg.train, []) is cfg.train


def test_training_one_model_refuses_a_config_whose_teachers_are_not_trained(tmp_path: Path) -> None:
    from pipeline import stages

    cfg = config(tmp_path, "train.seed=9", "train.distill.teacher_seeds=[3, 1]")
    with pytest.raises(PipelineError, match=r"teachers \(seed3, seed1\) trained in the run: `emotion run`"):
        stages.train_stage(cfg, prepared=None)  # type: ignore[arg-type]  # refused before the data is read
    layout = stages.Layout.of(cfg)
    student = teachers.student_config(cfg.train, teachers.plan(cfg.train, layout.root, layout.checkpoints))
    teachers.check_student_config(student, layout.root, layout.checkpoints)  # the flow's student config passes


def test_threads_share_the_cores_only_when_teachers_train_side_by_side_on_cpu() -> None:
    assert teachers.threads_per_teacher(1, "cpu") is None
    assert teachers.threads_per_teacher(2, "cuda") is None
    assert teachers.threads_per_teacher(64 * 1024, "auto") == 1


@pytest.mark.parametrize(
    ("plain", "distilled", "student", "seeds"),
    [
        ("emotion", "emotion-distill", 45, [42, 43, 44]),
        ("goemotions", "goemotions-distill", 46, [43, 44, 45]),
    ],
)
def test_distill_recipes_are_their_dataset_recipe_plus_teachers(plain, distilled, student, seeds) -> None:
    base = load_config(PARAMS, [], environ={}, recipes=[plain])
    cfg = load_config(PARAMS, [], environ={}, recipes=[distilled])
    assert (cfg.train.seed, cfg.train.distill.teacher_seeds) == (student, seeds)
    assert cfg.train.model_dump(exclude={"seed", "distill"}) == base.train.model_dump(exclude={"seed", "distill"})
    assert cfg.model_dump(exclude={"train", "recipes"}) == base.model_dump(exclude={"train", "recipes"})


def test_cross_validation_with_teachers_is_refused_as_leaking() -> None:
    with pytest.raises(PipelineError, match="cv_folds with teachers"):
        load_config(PARAMS, ["evaluate.cv_folds=3", "train.distill.teacher_seeds=[1, 2]"])
