"""Knowledge distillation (pipeline/training/distill.py and train.teachers) with the tiny random BERT."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.encode import PreparedData
from pipeline.errors import PipelineError
from pipeline.model.inference import predict_logits, softmax
from pipeline.model.modeling import load_classifier, load_tokenizer
from pipeline.model.runtime import choose_runtime
from pipeline.training.distill import distillation_loss, teacher_probabilities
from pipeline.training.train import train, weights_digest
from tests.unit.conftest import LABELS


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory, sample_prepared, tiny_train_cfgs) -> list[str]:
    """Two 4-step runs with different seeds: two teachers that disagree a little."""
    model_cfg, train_cfg = tiny_train_cfgs
    root = tmp_path_factory.mktemp("teachers")
    for seed in (11, 12):
        train(
            sample_prepared,
            model_cfg,
            train_cfg.model_copy(update={"seed": seed, "max_steps": 4, "learning_rate": 1e-3}),
            root / f"t{seed}",
        )
    return [str(root / "t11"), str(root / "t12")]


@pytest.mark.parametrize("multi_label", [False, True])
def test_the_loss_is_smallest_where_the_student_matches_the_teachers(multi_label: bool):
    temperature = 2.0
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    # the logits whose tempered softmax / sigmoid reproduce the teachers' probabilities exactly
    exact = temperature * (torch.logit(probs) if multi_label else probs.log())
    exact.requires_grad_(True)
    distillation_loss(exact, probs, multi_label, temperature).backward()
    assert exact.grad.abs().max().item() < 1e-6  # a minimum: nothing left to learn
    wrong = (exact.detach() + torch.tensor([[-2.0, 1.0, 1.0], [1.0, 0.0, -1.0]])).requires_grad_(True)
    loss = distillation_loss(wrong, probs, multi_label, temperature)
    assert loss > distillation_loss(exact.detach(), probs, multi_label, temperature)
    loss.backward()
    assert wrong.grad[0, 0] < 0 and wrong.grad[1, 0] > 0  # descent raises the under-, lowers the over-predicted


def test_temperature_squared_keeps_the_loss_on_the_hard_label_scale():
    probs = torch.tensor([[1.0, 0.0, 0.0]])  # a one-hot teacher: plain cross-entropy at T=1
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    plain = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    assert distillation_loss(logits, probs, False, 1.0).item() == pytest.approx(plain.item(), rel=1e-6)
    assert distillation_loss(logits * 3, probs, False, 3.0).item() == pytest.approx(9 * plain.item(), rel=1e-6)


def test_teacher_probabilities_are_the_mean_of_each_teachers_tempered_softmax(teachers, sample_prepared):
    runtime = choose_runtime("cpu", "fp32")
    texts = sample_prepared.texts("train")[:20]
    mean = teacher_probabilities(teachers, LABELS, texts, runtime, 64, 64, False, 2.0)
    each = [
        softmax(predict_logits(load_classifier(t), load_tokenizer(t), texts, runtime, 64, 64) / 2.0) for t in teachers
    ]
    np.testing.assert_allclose(mean, (each[0] + each[1]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(each[0], each[1])  # two different teachers, really averaged


def test_teachers_must_exist_and_share_the_label_order(teachers, sample_prepared, tiny_model_dir: Path, tmp_path: Path):
    runtime = choose_runtime("cpu", "fp32")
    texts = sample_prepared.texts("train")[:4]
    with pytest.raises(PipelineError, match="no saved model in '.*missing'"):
        teacher_probabilities([str(tmp_path / "missing")], LABELS, texts, runtime, 64, 64, False, 1.0)
    shuffled = LABELS[1:] + LABELS[:1]
    load_classifier(str(tiny_model_dir), labels=shuffled).save_pretrained(tmp_path / "shuffled")
    with pytest.raises(PipelineError, match="shuffled' predicts"):
        teacher_probabilities([teachers[0], str(tmp_path / "shuffled")], LABELS, texts, runtime, 64, 64, False, 1.0)


def _with_labels_rotated(data: PreparedData) -> PreparedData:
    """The same texts with every gold label moved to the next class: only the labels differ."""
    n = len(data.label_map.labels)
    splits = dict(data.splits)
    splits["train"] = data.splits["train"].assign(label_id=lambda f: (f["label_id"] + 1) % n)
    return PreparedData(splits, data.label_map)


@pytest.mark.slow
def test_distill_weight_decides_what_the_student_learns_from(
    teachers, sample_prepared, tiny_train_cfgs, tmp_path: Path
):
    model_cfg, train_cfg = tiny_train_cfgs
    base = train_cfg.model_copy(update={"max_steps": 3, "learning_rate": 1e-3, "average_from": None})

    def digest(data: PreparedData, name: str, **update) -> str:
        return train(data, model_cfg, base.model_copy(update=update), tmp_path / name).weights_digest

    rotated = _with_labels_rotated(sample_prepared)
    only_teachers = digest(sample_prepared, "a", teachers=teachers, distill_weight=1.0)
    assert digest(rotated, "b", teachers=teachers, distill_weight=1.0) == only_teachers  # gold labels unused
    only_gold = digest(sample_prepared, "c")
    assert digest(sample_prepared, "d", teachers=teachers, distill_weight=0.0) == only_gold  # teachers unused
    blended = digest(sample_prepared, "e", teachers=teachers, distill_weight=0.5)
    assert blended not in (only_teachers, only_gold)
    student = load_classifier(str(tmp_path / "e"))
    assert weights_digest(student) == blended  # the student is saved as a plain model folder


@pytest.mark.slow
def test_a_checkpoint_is_not_resumed_with_other_teachers_in_the_same_folder(
    teachers, sample_prepared, tiny_train_cfgs, tmp_path: Path
):
    model_cfg, train_cfg = tiny_train_cfgs
    folder = tmp_path / "teacher"
    shutil.copytree(teachers[0], folder)
    cfg = train_cfg.model_copy(update={"max_steps": 6, "eval_every": 2, "resume": True, "teachers": [str(folder)]})

    def stop(row: dict) -> None:
        raise KeyboardInterrupt("stopped after the first evaluation")

    def interrupt_then_restart(name: str, before_restart: Callable[[], None] = lambda: None) -> int:
        with pytest.raises(KeyboardInterrupt):  # the checkpoint at step 2 is written before the callback
            train(sample_prepared, model_cfg, cfg, tmp_path / name, on_evaluation=stop, checkpoint_dir=tmp_path / "ck")
        before_restart()
        return train(sample_prepared, model_cfg, cfg, tmp_path / name, checkpoint_dir=tmp_path / "ck").resumed_from_step

    def retrain_in_place() -> None:  # same path, other predictions
        shutil.rmtree(folder)
        shutil.copytree(teachers[1], folder)

    assert interrupt_then_restart("same") == 2
    assert interrupt_then_restart("other", retrain_in_place) == 0
