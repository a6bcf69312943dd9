"""pipeline.training.soup and train.init_seed with the tiny random BERT (a few steps per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.errors import PipelineError
from pipeline.model.modeling import load_classifier
from pipeline.training.soup import greedy_soup
from pipeline.training.train import train
from tests.unit.conftest import LABELS


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_classifier(str(model_dir)).state_dict()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, sample_prepared, tiny_train_cfgs) -> list[Path]:
    """Three 4-step runs sharing the head's initial weights (init_seed 7) with different batch orders."""
    model_cfg, train_cfg = tiny_train_cfgs
    root = tmp_path_factory.mktemp("soup")
    dirs = []
    for seed in (7, 8, 9):
        cfg = train_cfg.model_copy(update={"seed": seed, "init_seed": 7, "max_steps": 4, "learning_rate": 1e-3})
        train(sample_prepared, model_cfg, cfg, root / f"seed{seed}")
        dirs.append(root / f"seed{seed}")
    return dirs


def test_init_seed_fixes_the_head_and_seed_the_trajectory(sample_prepared, tiny_train_cfgs, tmp_path: Path):
    model_cfg, train_cfg = tiny_train_cfgs
    untrained = {}
    for seed, init in ((1, 5), (2, 5), (3, None)):
        cfg = train_cfg.model_copy(update={"seed": seed, "init_seed": init, "max_steps": 0})
        train(sample_prepared, model_cfg, cfg, tmp_path / f"s{seed}")
        untrained[seed] = _weights(tmp_path / f"s{seed}")["classifier.weight"]
    assert torch.equal(untrained[1], untrained[2])  # same init_seed: the same new head
    assert not torch.equal(untrained[1], untrained[3])  # init_seed unset: the head follows seed


@pytest.mark.slow
def test_greedy_soup_averages_the_runs_that_help_on_validation(runs, sample_prepared, tmp_path: Path):
    from transformers import pipeline

    assert not torch.equal(_weights(runs[0])["classifier.weight"], _weights(runs[1])["classifier.weight"])
    soup = greedy_soup(runs, sample_prepared, tmp_path / "soup", ModelConfig(max_length=64), device="cpu")
    assert sorted(soup.run_scores) == ["seed7", "seed8", "seed9"]
    assert soup.ingredients[0] == max(soup.run_scores, key=soup.run_scores.get)  # best run first
    assert soup.val_macro_f1 >= max(soup.run_scores.values())  # never worse on validation than the best run
    kept = [_weights(r) for r in runs if r.name in soup.ingredients]
    saved = _weights(soup.model_dir)
    for name in ("classifier.weight", "bert.encoder.layer.0.attention.self.query.weight"):
        torch.testing.assert_close(saved[name], torch.stack([w[name] for w in kept]).mean(0))
    assert (soup.model_dir / "calibration.json").exists() and soup.calibration["temperature"] > 0
    out = pipeline("text-classification", model=str(soup.model_dir), device="cpu")("what a lovely day", top_k=None)
    assert sorted(d["label"] for d in out) == sorted(LABELS)


def test_soup_refuses_models_of_another_shape(runs, sample_prepared, tiny_model_dir: Path, tmp_path: Path):
    other = load_classifier(str(tiny_model_dir), labels=LABELS[:3])
    other.save_pretrained(tmp_path / "three-labels")
    with pytest.raises(PipelineError, match="three-labels is not the same architecture"):
        greedy_soup(
            [runs[0], tmp_path / "three-labels"], sample_prepared, tmp_path / "soup", ModelConfig(), device="cpu"
        )
    with pytest.raises(PipelineError, match="at least one"):
        greedy_soup([], sample_prepared, tmp_path / "soup", ModelConfig(), device="cpu")
