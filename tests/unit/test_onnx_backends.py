"""The ONNX Runtime backends: the export answers like torch fp32, int8 goes through the parity check, the logged
export is used when a version has one, and the parity check scores multi-label models by micro-F1."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline.serving.backends import (
    FP32,
    ONNX_FP32,
    ONNX_INT8,
    FastClassifier,
    ParityData,
    build_classifier,
    parity_check,
)

TEXTS = [
    "i feel wonderful today",
    "ok",
    "my hands are shaking before the exam and i cannot stop thinking about what could go wrong tomorrow",
    "this makes me furious",
    "sad",
]


def test_onnx_fp32_matches_torch_fp32(fp32: FastClassifier, model_dir: Path, tmp_path: Path) -> None:
    import onnx

    from pipeline.model.onnx_export import export_onnx

    path = export_onnx(model_dir, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch and sequence axes
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_param == "sequence"

    for onnx_file in (path, None):  # the given export, or one made at conversion
        fast = fp32.converted(ONNX_FP32, onnx_file)
        assert fast.backend == ONNX_FP32 and fast.labels == fp32.labels
        np.testing.assert_allclose(fast.predict_proba(TEXTS), fp32.predict_proba(TEXTS), atol=1e-4)
        assert [p.label for p in fast.predict(TEXTS)] == [p.label for p in fp32.predict(TEXTS)]
    assert fp32.backend == FP32  # converting leaves the torch model as it was


def test_onnx_int8_is_used_only_through_the_parity_check(
    fp32: FastClassifier, model_dir: Path, sample_parity: ParityData, caplog: pytest.LogCaptureFixture
) -> None:
    int8 = fp32.converted(ONNX_INT8)
    probs = int8.predict_proba(TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - fp32.predict_proba(TEXTS)).max() < 0.05

    # a tolerance of 1 (100 points) always passes: the int8 session is served
    chosen, report = build_classifier(model_dir, ONNX_INT8, sample_parity, 1.0, max_length=64)
    assert chosen.backend == ONNX_INT8 and report.passed and report.metric == "accuracy" and report.n == 120
    # a negative tolerance never passes: fp32 is served and the log says why
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.backends"):
        chosen, report = build_classifier(model_dir, ONNX_INT8, sample_parity, -0.01, max_length=64)
    assert chosen.backend == FP32 and not report.passed
    assert "onnx-int8 accuracy" in report.reason and "outside the tolerance" in report.reason
    assert "refusing backend onnx-int8, serving fp32 instead" in caplog.text


def test_multi_label_parity_uses_micro_f1(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    from pipeline.model.modeling import load_tokenizer

    labels = ["joy", "fear", "anger"]
    model = BertForSequenceClassification.from_pretrained(
        tiny_model_dir,
        num_labels=3,
        problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model.save_pretrained(tmp_path)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(tmp_path)
    reference = FastClassifier.load(tmp_path, FP32, max_length=64)
    data = ParityData(TEXTS, [["joy"], ["fear", "anger"], ["fear"], ["anger"], ["joy", "fear"]], "multi.csv")

    report = parity_check(reference, reference.converted(ONNX_FP32), data, tolerance=0.0)
    assert report.metric == "micro-F1" and report.passed and report.agreement == 1.0, report.reason
    assert 0.0 < report.reference_accuracy == report.candidate_accuracy <= 1.0
    assert "micro-F1" in report.reason


def test_multi_label_parity_data_for_a_single_label_model_is_refused(fp32: FastClassifier) -> None:
    data = ParityData(["i am happy and scared"], [["joy", "fear"]], "multi.csv")
    report = parity_check(fp32, fp32, data, tolerance=1.0)
    assert not report.passed and "multi-label but the model is single-label" in report.reason
