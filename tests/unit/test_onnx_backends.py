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
    ONNX_INT8_STATIC,
    FastClassifier,
    ParityData,
    build_classifier,
    parity_check,
    static_int8_fallback,
)
from tests.unit.conftest import CUE_LABELS, CUE_TEXTS, FAST_BOUND

TEXTS = [
    "i feel wonderful today",
    "ok",
    "my hands are shaking before the exam and i cannot stop thinking about what could go wrong tomorrow",
    "this makes me furious",
    "sad",
    *CUE_TEXTS,
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
        assert [p.label for p in fast.predict(CUE_TEXTS)] == CUE_LABELS
    assert fp32.backend == FP32  # converting leaves the torch model as it was


def test_onnx_int8_is_used_only_through_the_parity_check(
    fp32: FastClassifier, model_dir: Path, sample_parity: ParityData, caplog: pytest.LogCaptureFixture
) -> None:
    int8 = fp32.converted(ONNX_INT8)
    probs = int8.predict_proba(TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - fp32.predict_proba(TEXTS)).max() < FAST_BOUND
    assert [p.label for p in int8.predict(CUE_TEXTS)] == CUE_LABELS

    # a tolerance of 1 (100 points) always passes: the int8 session is served
    chosen, report = build_classifier(model_dir, ONNX_INT8, sample_parity, 1.0, max_length=64, batch_size=64)
    assert chosen.backend == ONNX_INT8 and report.passed and report.metric == "accuracy" and report.n == 120
    # a negative tolerance never passes: fp32 is served and the log says why
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.backends"):
        chosen, report = build_classifier(model_dir, ONNX_INT8, sample_parity, -0.01, max_length=64, batch_size=64)
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
    reference = FastClassifier.load(tmp_path, FP32, max_length=64, batch_size=64)
    data = ParityData(TEXTS, [["joy"], ["fear", "anger"], ["fear"], ["anger"], ["joy", "fear"]], "multi.csv")

    report = parity_check(reference, reference.converted(ONNX_FP32), data, tolerance=0.0)
    assert report.metric == "micro-F1" and report.passed and report.agreement == 1.0, report.reason
    assert 0.0 < report.reference_accuracy == report.candidate_accuracy <= 1.0
    assert "micro-F1" in report.reason


def test_multi_label_parity_data_for_a_single_label_model_is_refused(fp32: FastClassifier) -> None:
    data = ParityData(["i am happy and scared"], [["joy", "fear"]], "multi.csv")
    report = parity_check(fp32, fp32, data, tolerance=1.0)
    assert not report.passed and "multi-label but the model is single-label" in report.reason


def test_static_int8_is_a_calibrated_qdq_model_cached_beside_the_export(
    fp32: FastClassifier, model_dir: Path, sample_parity: ParityData, tmp_path: Path
) -> None:
    import onnx

    from pipeline.model.onnx_export import STATIC_INT8_FILE, export_onnx

    assert sample_parity.calibration_texts and not set(sample_parity.calibration_texts) & set(sample_parity.texts)
    source = export_onnx(model_dir, tmp_path / "model.onnx")
    static = fp32.converted(ONNX_INT8_STATIC, source, sample_parity.calibration_texts)
    cached = tmp_path / STATIC_INT8_FILE
    graph = onnx.load(str(cached)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    per_channel = [
        n for n in graph.node if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
    ]
    assert per_channel  # weights carry one scale per output channel
    assert static.backend == ONNX_INT8_STATIC and static.quantization == "static"
    probs = static.predict_proba(TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - fp32.predict_proba(TEXTS)).max() < FAST_BOUND

    # built once: a second conversion reuses the file, even without calibration texts
    stamp = cached.stat().st_mtime_ns
    again = fp32.converted(ONNX_INT8_STATIC, source)
    assert cached.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.predict_proba(TEXTS), probs, atol=1e-6)


def test_static_fallback_reports_both_checks(fp32: FastClassifier, sample_parity: ParityData) -> None:
    dynamic = parity_check(fp32, fp32.converted(ONNX_INT8), sample_parity, tolerance=-0.01)  # forced to fail
    assert not dynamic.passed
    chosen, report = static_int8_fallback(fp32, dynamic, sample_parity, tolerance=1.0)
    assert chosen.backend == ONNX_INT8_STATIC and report.passed and report.backend == ONNX_INT8_STATIC
    assert report.n == 120 and 0.0 <= report.candidate_accuracy <= 1.0
    assert report.reference_accuracy == dynamic.reference_accuracy  # same fp32 reference, same test texts
    assert report.dynamic is not None and report.dynamic["backend"] == ONNX_INT8 and not report.dynamic["passed"]
    assert report.reason.startswith("dynamic int8 refused (onnx-int8 accuracy")
    assert "static int8 (calibrated): onnx-int8-static accuracy" in report.reason

    _, refused = static_int8_fallback(fp32, dynamic, sample_parity, tolerance=-0.01)
    assert not refused.passed and "outside the tolerance" in refused.reason


def test_onnx_int8_falls_back_to_static_when_dynamic_fails_parity(
    model_dir: Path, sample_parity: ParityData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.model.onnx_export import STATIC_INT8_FILE, export_onnx
    from pipeline.serving import backends

    real_check = backends.parity_check

    def dynamic_fails(reference, candidate, data, tolerance):  # the real check; dynamic int8 held to -1 points
        return real_check(reference, candidate, data, -0.01 if candidate.backend == ONNX_INT8 else tolerance)

    monkeypatch.setattr(backends, "parity_check", dynamic_fails)
    source = export_onnx(model_dir, tmp_path / "model.onnx")
    chosen, report = build_classifier(
        model_dir, ONNX_INT8, sample_parity, 1.0, max_length=64, batch_size=64, onnx_file=source
    )
    assert chosen.backend == ONNX_INT8_STATIC and report.passed and report.dynamic["candidate_accuracy"] is not None
    assert (tmp_path / STATIC_INT8_FILE).exists()

    # both fail: fp32 is served, and the report keeps both reasons
    chosen, report = build_classifier(
        model_dir, ONNX_INT8, sample_parity, -0.01, max_length=64, batch_size=64, onnx_file=source
    )
    assert chosen.backend == FP32 and not report.passed and report.backend == ONNX_INT8_STATIC
    assert "dynamic int8 refused" in report.reason


def test_dynamic_int8_that_passes_builds_no_static_model(
    model_dir: Path, sample_parity: ParityData, tmp_path: Path
) -> None:
    from pipeline.model.onnx_export import STATIC_INT8_FILE, export_onnx

    source = export_onnx(model_dir, tmp_path / "model.onnx")
    chosen, report = build_classifier(
        model_dir, ONNX_INT8, sample_parity, 1.0, max_length=64, batch_size=64, onnx_file=source
    )
    assert chosen.backend == ONNX_INT8 and chosen.quantization == "dynamic" and report.dynamic is None
    assert not (tmp_path / STATIC_INT8_FILE).exists()
