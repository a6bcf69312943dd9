"""pipeline.training.train and pipeline.model.predict: the tiny random BERT on the shipped sample data, few steps."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.model.inference import length_sorted_batches, softmax
from pipeline.model.predict import Predictor, find_model_folder
from pipeline.model.runtime import choose_runtime
from pipeline.training.train import length_grouped_batches, train
from tests.unit.conftest import CUE_LABELS, CUE_TEXTS, LABELS

HISTORY_KEYS = {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"}


def test_train_returns_history_and_saves_model(trained):
    result, model_dir = trained
    assert result.model_dir == model_dir
    assert result.steps == 3
    assert len(result.history) == 1  # max_steps=3 ends inside epoch 1; one evaluation
    row = result.history[0]
    assert set(row) == HISTORY_KEYS
    assert (row["epoch"], row["step"]) == (1, 3)
    assert 0.0 <= row["val_accuracy"] <= 1.0 and 0.0 <= row["val_macro_f1"] <= 1.0
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert result.best_epoch == 1
    assert result.device == "cpu"
    assert result.samples_per_second > 0
    assert (model_dir / "config.json").exists() and (model_dir / "tokenizer_config.json").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(LABELS))] == LABELS


def test_saved_model_loads_in_transformers_pipeline_with_label_names(trained):
    from transformers import pipeline

    _, model_dir = trained
    clf = pipeline("text-classification", model=str(model_dir), device="cpu")
    out = clf("i feel wonderful today", top_k=None)
    assert sorted(d["label"] for d in out) == sorted(LABELS)
    assert sum(d["score"] for d in out) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_training_is_reproducible(trained, sample_prepared, tiny_train_cfgs, tmp_path: Path):
    first, first_dir = trained
    model_cfg, train_cfg = tiny_train_cfgs
    second = train(sample_prepared, model_cfg, train_cfg, tmp_path / "again")
    assert second.history == first.history  # exactly the same losses and validation metrics
    texts = sample_prepared.texts("test")[:8]
    a = Predictor(first_dir, device="cpu").predict_proba(texts)
    b = Predictor(tmp_path / "again", device="cpu").predict_proba(texts)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_running_average_is_the_mean_of_snapshots():
    import torch

    from pipeline.training.train import running_average

    snapshots = [{"w": torch.tensor([float(i), 2.0 * i]), "ids": torch.tensor([i])} for i in range(1, 5)]
    average = None
    for count, state in enumerate(snapshots):
        average = running_average(average, state, count)
    torch.testing.assert_close(average["w"], torch.tensor([2.5, 5.0]))
    assert average["ids"].item() == 1  # integer buffers are not averaged
    assert snapshots[0]["w"].tolist() == [1.0, 2.0]  # the first snapshot was copied, not aliased


@pytest.mark.slow
def test_weight_average_competes_with_the_best_evaluation_on_validation(
    sample_prepared, tiny_train_cfgs, tmp_path: Path
):
    import torch
    from transformers import AutoModelForSequenceClassification

    model_cfg, train_cfg = tiny_train_cfgs
    cfg = train_cfg.model_copy(update={"max_steps": 12, "eval_every": 3, "average_from": 1})
    result = train(sample_prepared, model_cfg, cfg, tmp_path / "model")
    assert result.averaged_checkpoints == len(result.history) == 4
    best = max(row["val_macro_f1"] for row in result.history)
    assert result.averaged == (result.averaged_val_macro_f1 > best)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    again = train(sample_prepared, model_cfg, cfg.model_copy(update={"average_from": None}), tmp_path / "plain")
    assert again.history == result.history and again.averaged_checkpoints == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "plain")
    same = all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), plain.state_dict().values()))
    assert same != result.averaged  # the saved weights are the average exactly when it won


def test_max_steps_zero_saves_an_untrained_model(sample_prepared, tiny_model_dir: Path, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.stages import Layout, train_stage
    from tests.conftest import PARAMS

    cfg = load_config(
        PARAMS,
        [
            f"project_dir={tmp_path}",
            f"model.name={tiny_model_dir}",
            "train.max_steps=0",
            "train.device=cpu",
            "model.max_length=64",
        ],
        environ={},
    )
    result = train_stage(cfg, sample_prepared)
    assert result.steps == 0 and result.history == [] and result.best_epoch == 0
    layout = Layout.of(cfg)
    assert (layout.model / "config.json").exists()
    curve = pd.read_csv(layout.plots / "training_curve.csv")
    assert curve.empty
    assert curve.columns.tolist() == ["epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"]
    assert (layout.plots / "training_curve.png").exists()
    summary = json.loads((layout.root / "training_summary.json").read_text())
    assert summary["steps"] == 0
    predictor = Predictor(layout.model, device="cpu")
    assert predictor.labels == LABELS
    assert predictor.predict_proba(["still works"]).shape == (1, len(LABELS))


@pytest.mark.slow
def test_epoch_callback_sees_each_history_row(sample_prepared, tiny_train_cfgs, tmp_path: Path):
    model_cfg, train_cfg = tiny_train_cfgs
    seen: list[dict] = []
    cfg = train_cfg.model_copy(update={"max_steps": 2, "batch_size": 256, "epochs": 2})  # 2 steps/epoch -> 1 epoch
    result = train(sample_prepared, model_cfg, cfg, tmp_path / "m", on_evaluation=seen.append)
    assert seen == result.history and len(seen) == 1 and seen[0]["step"] == 2


def test_interrupted_run_resumes_mid_epoch_to_the_same_weights(sample_prepared, tiny_train_cfgs, tmp_path: Path):
    import torch

    model_cfg, train_cfg = tiny_train_cfgs
    cfg = train_cfg.model_copy(update={"max_steps": 6, "eval_every": 2, "grad_accumulation": 2, "average_from": 1})
    reference = train(sample_prepared, model_cfg, cfg, tmp_path / "reference")

    def fail_at_step_4(row: dict) -> None:
        if row["step"] == 4:
            raise KeyboardInterrupt("killed after the checkpoint at step 4")

    with pytest.raises(KeyboardInterrupt):
        train(sample_prepared, model_cfg, cfg, tmp_path / "m", on_evaluation=fail_at_step_4, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert (saved["epoch"], saved["step"], saved["micro_done"]) == (1, 4, 8)  # mid-epoch, after 4 x 2 micro-batches
    resumed = train(sample_prepared, model_cfg, cfg, tmp_path / "m", checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 4
    assert resumed.history == reference.history and resumed.weights_digest == reference.weights_digest
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_checkpoint_that_needs_more_than_weights_is_ignored(tmp_path: Path, caplog):
    import argparse

    import torch

    from pipeline.training.train import _Checkpoint

    checkpoint = _Checkpoint(tmp_path / "checkpoint.pt", "abc")
    torch.save({"fingerprint": "abc", "step": 3, "extra": argparse.Namespace(x=1)}, checkpoint.path)
    assert checkpoint.load() is None  # unpickling it would run arbitrary code: start fresh instead
    assert "holds more than tensors and plain values" in caplog.text
    torch.save({"fingerprint": "abc", "step": 3}, checkpoint.path)
    assert checkpoint.load() == {"fingerprint": "abc", "step": 3}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_only_on_a_terminal_and_redrawn_at_most_twice_a_second(
    sample_prepared, tiny_train_cfgs, tmp_path: Path, monkeypatch, terminal: bool
):
    import time

    model_cfg, train_cfg = tiny_train_cfgs
    stderr = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    started = time.monotonic()
    train(sample_prepared, model_cfg, train_cfg.model_copy(update={"max_steps": 24}), tmp_path / "m")
    elapsed = time.monotonic() - started
    redraws = [line for line in stderr.getvalue().split("\r") if line.startswith("train:")]
    if not terminal:
        assert redraws == []  # a log file gets no progress lines
        return
    assert redraws and "samples/s=" in redraws[-1] and "24/24" in redraws[-1]
    assert len(redraws) <= 2 * elapsed + 3  # at most one redraw per 0.5 s, plus the first and the last


# --- predict -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor(model_dir, device="cpu")


def test_predictor_probabilities_sum_to_one_and_cover_labels(predictor: Predictor):
    texts = ["i am so happy", "this is terrifying", "x", "a much longer sentence " * 20]
    probs = predictor.predict_proba(texts)
    assert probs.shape == (len(texts), len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    preds = predictor.predict(texts)
    assert [p.text for p in preds] == texts and preds[0].label == "joy"
    for p, row in zip(preds, probs):
        assert list(p.probabilities) == LABELS
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.label == LABELS[int(row.argmax())]
        assert p.score == pytest.approx(max(p.probabilities.values()))


def test_predictions_do_not_depend_on_batching(model_dir: Path):
    texts = CUE_TEXTS + [f"text number {i} " + "word " * (i % 7) for i in range(11)]
    a = Predictor(model_dir, device="cpu", precision="fp32", batch_size=3).predict_proba(texts)
    b = Predictor(model_dir, device="cpu", precision="fp32", batch_size=64).predict_proba(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)  # cue rows differ by 0.1 or more: a swap fails
    assert [LABELS[i] for i in a[: len(CUE_TEXTS)].argmax(axis=1)] == CUE_LABELS


@pytest.mark.parametrize("texts", [[""], ["fine", "   "], ["ok", None]])
def test_empty_text_is_a_pipeline_error(predictor: Predictor, texts):
    with pytest.raises(PipelineError, match="empty"):
        predictor.predict(texts)


def test_predictor_needs_a_model_folder(tmp_path: Path):
    with pytest.raises(PipelineError, match="config.json"):
        Predictor(tmp_path)
    with pytest.raises(PipelineError):
        Predictor(tmp_path / "does-not-exist")


def test_find_model_folder(trained, tmp_path: Path):
    import shutil

    _, model_dir = trained
    assert find_model_folder(model_dir) == model_dir
    nested = tmp_path / "download" / "artifacts" / "hf_model"
    shutil.copytree(model_dir, nested)
    assert find_model_folder(tmp_path / "download") == nested
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no Hugging Face model folder"):
        find_model_folder(tmp_path / "empty")


def test_score_model_rejects_label_mismatch(trained, sample_prepared, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.data.encode import LabelMap, PreparedData
    from pipeline.stages import score_model
    from tests.conftest import PARAMS

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "train.device=cpu", "model.max_length=64"], environ={})
    ev = score_model(cfg, trained[1], sample_prepared)
    assert ev.confusion.sum() == len(sample_prepared.texts("test"))
    other = PreparedData(sample_prepared.splits, LabelMap(list(reversed(LABELS))))
    with pytest.raises(PipelineError, match="predicts"):
        score_model(cfg, trained[1], other)


# --- helpers of the training loop ----------------------------------------------------------------------------


def test_length_grouped_batches_cover_every_index_once():
    lengths = [random.Random(1).randint(1, 60) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 16, random.Random(5))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert batches == length_grouped_batches(lengths, 16, random.Random(5))  # same rng seed, same batches


def test_length_sorted_batches_and_softmax():
    batches = length_sorted_batches([5, 1, 3, 9, 2], 2)
    assert batches == [[1, 4], [2, 0], [3]]
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_choose_runtime_cpu_precisions():
    import torch

    assert choose_runtime("cpu", "fp32").dtype is None
    assert choose_runtime("cpu", "fp16").dtype is torch.bfloat16  # fp16 autocast is not used on CPU
    assert choose_runtime("cpu", "bf16").precision == "bf16"
    assert choose_runtime("cpu", "auto").device.type == "cpu"


def test_model_folder_without_config_is_a_pipeline_error(tmp_path: Path):
    from pipeline.model.modeling import resolve_model_source

    with pytest.raises(PipelineError, match="config.json"):
        resolve_model_source(str(tmp_path))
    assert resolve_model_source("some-org/some-model") == "some-org/some-model"


def test_unreachable_hub_model_is_a_pipeline_error():
    from pipeline.model.modeling import load_tokenizer

    with pytest.raises(PipelineError, match="network"):
        load_tokenizer("nobody-xyz/no-such-model-123")


def test_predictor_applies_the_training_text_policy(tiny_model_dir, tmp_path) -> None:
    """A model trained on masked URLs/mentions sees served texts masked the same way."""
    import shutil

    from pipeline.config import CleanConfig
    from pipeline.data.clean import save_text_policy
    from pipeline.model.modeling import load_classifier
    from pipeline.model.predict import Predictor

    folder = tmp_path / "model"
    load_classifier(str(tiny_model_dir), ["joy", "fear"]).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    texts = ["Look at  https://example.com/x  @someone"]
    assert Predictor(folder).prepare(texts) == texts  # no stored policy: texts pass unchanged
    save_text_policy(folder, CleanConfig(mask_urls=True, mask_mentions=True, lowercase=True))
    assert Predictor(folder).prepare(texts) == ["look at <url> @user"]


def test_layer_lr_decay_gives_lower_layers_smaller_steps(tiny_model_dir: Path, tiny_train_cfgs):
    from pipeline.model.modeling import load_classifier
    from pipeline.training.train import _optimizer, layer_depth

    model = load_classifier(str(tiny_model_dir), labels=LABELS)  # 2 layers: head 0, layer.1 -> 1, layer.0 -> 2
    assert layer_depth("bert.encoder.layer.1.output.dense.weight", 2) == 1
    assert layer_depth("distilbert.transformer.layer.0.ffn.lin1.weight", 2) == 2
    assert layer_depth("bert.embeddings.word_embeddings.weight", 2) == 3
    assert layer_depth("classifier.weight", 2) == 0
    cfg = tiny_train_cfgs[1].model_copy(update={"learning_rate": 1e-3, "layer_lr_decay": 0.5})
    lr_of = {id(p): group["lr"] for group in _optimizer(model, cfg).param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(2.5e-4)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1.25e-4)
    flat = {group["lr"] for group in _optimizer(model, tiny_train_cfgs[1]).param_groups}
    assert flat == {tiny_train_cfgs[1].learning_rate}  # decay 1.0 (default): one learning rate


def test_label_smoothing_matches_the_smoothed_targets():
    import torch

    from pipeline.training.train import loss_fn

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]])
    single = loss_fn(logits, torch.tensor([0, 2]), multi_label=False, smoothing=0.3)
    soft = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])  # 0.7 on the label + 0.3 spread over 3 classes
    assert single.item() == pytest.approx(-(soft * logits.log_softmax(1)).sum(1).mean().item(), rel=1e-6)
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    multi = loss_fn(logits, hot, multi_label=True, smoothing=0.2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, hot * 0.8 + 0.1)
    assert multi.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss_fn(logits, hot, multi_label=True).item() == pytest.approx(  # default 0: plain BCE
        torch.nn.functional.binary_cross_entropy_with_logits(logits, hot).item()
    )
