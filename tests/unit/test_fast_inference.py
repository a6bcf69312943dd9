"""The fast inference path: same answers as the reference predictor, bf16/int8 backends, and the parity check."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.serving.backends import (
    BF16,
    FP32,
    INT8,
    FastClassifier,
    ParityData,
    build_classifier,
    parity_check,
)
from tests.conftest import PARAMS
from tests.unit.conftest import CUE_LABELS, CUE_TEXTS, FAST_BOUND

TEXTS = [
    "i feel wonderful today",
    "ok",
    "my hands are shaking before the exam and i cannot stop thinking about what could go wrong tomorrow",
    "i love my dog",
    "this makes me furious",
    "what a surprise to see you here after all these years of silence",
    "sad",
]


def test_fp32_matches_the_reference_predictor(model_dir: Path, fp32: FastClassifier) -> None:
    from pipeline.model.predict import Predictor

    reference = Predictor(model_dir, device="cpu", precision="fp32", max_length=64).predict_proba(TEXTS)
    fast = fp32.predict_proba(TEXTS)
    assert fast.shape == (len(TEXTS), 6)
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    assert fp32.labels == ["sadness", "joy", "love", "anger", "fear", "surprise"]


def test_length_sorted_batches_keep_input_order(fp32: FastClassifier) -> None:
    texts = CUE_TEXTS + TEXTS
    together = fp32.predict_proba(texts)  # batches of 3 across very different lengths
    one_by_one = np.vstack([fp32.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)  # rows differ by 0.1 or more: any swap fails
    assert [fp32.labels[i] for i in together[: len(CUE_TEXTS)].argmax(axis=1)] == CUE_LABELS
    predictions = fp32.predict(texts)
    assert [p.text for p in predictions] == texts
    assert [p.label for p in predictions[: len(CUE_TEXTS)]] == CUE_LABELS
    assert all(p.label == max(p.probabilities, key=p.probabilities.get) for p in predictions)


@pytest.mark.parametrize("backend", [BF16, INT8])
def test_fast_backends_stay_close_to_fp32(fp32: FastClassifier, backend: str) -> None:
    fast = fp32.converted(backend)
    assert fast.backend == backend and fast.labels == fp32.labels
    probs = fast.predict_proba(CUE_TEXTS + TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - fp32.predict_proba(CUE_TEXTS + TEXTS)).max() < FAST_BOUND
    assert [p.label for p in fast.predict(CUE_TEXTS)] == CUE_LABELS
    assert fp32.backend == FP32  # converting leaves the fp32 model as it was
    if backend == INT8:
        import torch

        kinds = {type(m).__module__ for m in fast.model.modules() if "Linear" in type(m).__name__}
        assert any("quantized" in k for k in kinds), kinds
        assert not any(type(m) is torch.nn.Linear for m in fast.model.modules())


@pytest.mark.parametrize("backend", [BF16, INT8])
def test_parity_check_passes_fast_backends_of_the_learned_model_on_its_cue_texts(
    fp32: FastClassifier, cue_parity: ParityData, backend: str
) -> None:
    report = parity_check(fp32, fp32.converted(backend), cue_parity, tolerance=0.003)
    assert report.reference_accuracy is not None and report.reference_accuracy >= 0.95
    assert report.passed and report.agreement == 1.0, report.reason


def test_parity_check_refuses_the_untrained_model(
    fp32: FastClassifier, cue_parity: ParityData, tiny_classifier_dir: Path
) -> None:
    untrained = FastClassifier.load(tiny_classifier_dir, FP32, max_length=64, batch_size=64)
    report = parity_check(fp32, untrained, cue_parity, tolerance=0.003)
    assert not report.passed and report.candidate_accuracy is not None and report.candidate_accuracy < 0.5
    assert np.abs(untrained.predict_proba(TEXTS) - fp32.predict_proba(TEXTS)).max() > 10 * FAST_BOUND


def test_bad_inputs_are_user_errors(fp32: FastClassifier, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="empty"):
        fp32.predict_proba(["fine", "   "])
    with pytest.raises(PipelineError, match="unknown inference backend"):
        FastClassifier.load(model_dir, "fp16", 64, 64)
    with pytest.raises(PipelineError, match="config.json missing"):
        FastClassifier.load(tmp_path, FP32, 64, 64)
    assert fp32.predict_proba([]).shape == (0, 6)


def test_parity_data_is_the_test_split(sample_parity: ParityData) -> None:
    assert len(sample_parity.texts) == len(sample_parity.labels) == 120
    assert set(sample_parity.labels) == {"sadness", "joy", "love", "anger", "fear", "surprise"}


@pytest.mark.parametrize("backend", [BF16, INT8])
@pytest.mark.slow
def test_parity_check_on_the_sample_test_split(
    fp32: FastClassifier, sample_parity: ParityData, backend: str, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    candidate = fp32.converted(backend)
    report = parity_check(fp32, candidate, sample_parity, tolerance=0.003)
    gold = np.array([fp32.labels.index(label) for label in sample_parity.labels])
    expected_ref = float((fp32.predict_proba(sample_parity.texts).argmax(axis=1) == gold).mean())
    expected_cand = float((candidate.predict_proba(sample_parity.texts).argmax(axis=1) == gold).mean())
    assert report.n == 120 and report.source == "sample" and report.backend == backend
    assert report.reference_accuracy == pytest.approx(expected_ref)
    assert report.candidate_accuracy == pytest.approx(expected_cand)
    assert report.passed == (abs(expected_cand - expected_ref) <= 0.003)
    assert 0.0 <= report.agreement <= 1.0

    # build_classifier uses the backend only when the same check passes; otherwise fp32, with the reason logged
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.backends"):
        chosen, built_report = build_classifier(model_dir, backend, sample_parity, 0.003, max_length=64, batch_size=64)
    assert built_report.passed == report.passed
    if report.passed:
        assert chosen.backend == backend and "within" in built_report.reason
    else:
        assert chosen.backend == FP32 and "outside" in built_report.reason
        assert f"refusing backend {backend}" in caplog.text


@pytest.mark.slow
def test_parity_check_refuses_a_model_that_answers_differently(
    fp32: FastClassifier, model_dir: Path, sample_parity: ParityData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real (degenerate) model that always answers one label must fail parity against the trained one."""
    import torch

    from pipeline.model.modeling import load_classifier, load_tokenizer

    report = parity_check(fp32, fp32, sample_parity, tolerance=0.0)
    assert report.passed and report.agreement == 1.0  # a model is at parity with itself, even at zero tolerance
    # the sample test split is balanced; keep all of one label and half of the others, so label shares differ
    keep = [
        i
        for i, label in enumerate(sample_parity.labels)
        if label == "joy" or sample_parity.labels[:i].count(label) % 2 == 0
    ]
    data = ParityData([sample_parity.texts[i] for i in keep], [sample_parity.labels[i] for i in keep], "sample subset")
    ref_acc = parity_check(fp32, fp32, data, tolerance=0.0).reference_accuracy
    share = {label: data.labels.count(label) / len(data.labels) for label in fp32.labels}
    constant = max(share, key=lambda label: abs(share[label] - ref_acc))
    assert abs(share[constant] - ref_acc) > 0.05

    model = load_classifier(str(model_dir))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0 if label == constant else 0.0 for label in fp32.labels]))
    out = tmp_path / "constant"
    model.save_pretrained(out)
    load_tokenizer(str(model_dir)).save_pretrained(out)
    degenerate = FastClassifier.load(out, FP32, max_length=64, batch_size=64)

    refused = parity_check(fp32, degenerate, data, tolerance=0.003)
    assert not refused.passed
    assert refused.candidate_accuracy == pytest.approx(share[constant])
    assert "outside the tolerance of 0.30 points" in refused.reason


def test_parity_cannot_run_without_matching_data(
    fp32: FastClassifier, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alien = ParityData(["i am bored", "so bored"], ["boredom", "boredom"], "alien.csv")
    report = parity_check(fp32, fp32.converted(INT8), alien, 0.003)
    assert not report.passed and "labels the model does not know (boredom)" in report.reason

    with caplog.at_level(logging.WARNING, logger="pipeline.serving.backends"):
        chosen, report = build_classifier(
            model_dir, BF16, None, 0.003, max_length=64, batch_size=64, parity_error="file missing"
        )
    assert chosen.backend == FP32 and not report.passed
    assert "no parity data (file missing)" in report.reason and "refusing backend torch-bf16" in caplog.text

    chosen, report = build_classifier(model_dir, FP32, None, 0.003, max_length=64, batch_size=64)
    assert chosen.backend == FP32 and report is None  # fp32 needs no check


def test_serve_config_from_params_yaml() -> None:
    from pipeline.config import load_config

    cfg = load_config(PARAMS, [], environ={})
    assert cfg.serve.host == "127.0.0.1"
    assert cfg.serve.backend in ("torch-fp32", "torch-bf16", "int8")
    assert cfg.serve.parity_tolerance == pytest.approx(0.003)
    cfg = load_config(PARAMS, ["serve.backend=int8", "serve.port=9001", "serve.max_texts=3"], environ={})
    assert (cfg.serve.backend, cfg.serve.port, cfg.serve.max_texts) == ("int8", 9001, 3)
    with pytest.raises(PipelineError, match="serve.backend"):
        load_config(PARAMS, ["serve.backend=fp16"], environ={})
    with pytest.raises(PipelineError, match="serve.max_texts"):
        load_config(PARAMS, ["serve.max_texts=0"], environ={})
