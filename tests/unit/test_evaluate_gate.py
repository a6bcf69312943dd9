"""pipeline.evaluation.evaluate (metrics vs sklearn, written artifacts) and pipeline.evaluation.gate.

The gate: absolute floors and no regression against the champion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from pipeline.config import GateConfig
from pipeline.evaluation.evaluate import score, write_evaluation
from pipeline.evaluation.gate import decide

LABELS = ["anger", "joy", "fear", "love"]  # 'love' never occurs in y_true or y_pred


@pytest.fixture
def known():
    rng = np.random.default_rng(3)
    y_true = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0, 0, 1, 1])
    probs = rng.random((len(y_true), len(LABELS))) * 0.5
    probs[np.arange(len(y_true)), y_pred] += 1.0  # argmax is y_pred
    probs /= probs.sum(axis=1, keepdims=True)
    return y_true, y_pred, probs


def test_score_matches_sklearn(known):
    y_true, y_pred, probs = known
    ev = score(y_true, probs, LABELS)
    ids = list(range(len(LABELS)))
    np.testing.assert_array_equal(ev.y_pred, y_pred)
    assert ev.metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        kw = dict(labels=ids, average=avg, zero_division=0)
        assert ev.metrics[f"{avg}_f1"] == pytest.approx(f1_score(y_true, y_pred, **kw))
        assert ev.metrics[f"{avg}_precision"] == pytest.approx(precision_score(y_true, y_pred, **kw))
        assert ev.metrics[f"{avg}_recall"] == pytest.approx(recall_score(y_true, y_pred, **kw))
    per_f1 = f1_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    for i, name in enumerate(LABELS):
        assert ev.metrics[f"f1_{name}"] == pytest.approx(per_f1[i])
        assert ev.per_class[name]["f1"] == pytest.approx(per_f1[i])
        assert ev.per_class[name]["support"] == int((y_true == i).sum())
    # hand-checked anchors: 8 of 12 right; macro-F1 averages over all four labels, the absent one scoring 0
    assert ev.metrics["accuracy"] == pytest.approx(8 / 12)
    assert ev.metrics["f1_love"] == 0.0
    assert ev.metrics["macro_f1"] == pytest.approx(sum(per_f1) / 4)


def test_score_keys_and_confusion(known):
    y_true, _, probs = known
    ev = score(y_true, probs, LABELS)
    assert {f"f1_{n}" for n in LABELS} <= set(ev.metrics)
    assert set(ev.per_class) == set(LABELS)
    assert ev.confusion.shape == (4, 4)
    np.testing.assert_array_equal(ev.confusion, confusion_matrix(y_true, ev.y_pred, labels=[0, 1, 2, 3]))
    assert ev.confusion.sum() == len(y_true)
    assert ev.confusion[3].sum() == 0 and ev.confusion[:, 3].sum() == 0
    for name in LABELS:
        assert name in ev.report


def test_perfect_predictions():
    y = np.array([0, 1, 2, 1])
    ev = score(y, np.eye(3)[y], ["a", "b", "c"])
    assert ev.metrics["accuracy"] == ev.metrics["macro_f1"] == ev.metrics["weighted_f1"] == 1.0
    np.testing.assert_array_equal(ev.confusion, np.diag([1, 2, 1]))


def test_write_evaluation(tmp_path: Path, known):
    y_true, y_pred, probs = known
    ev = score(y_true, probs, LABELS)
    paths = write_evaluation(ev, tmp_path / "out", tmp_path / "plots")
    assert {"metrics", "report", "confusion_png", "confusion_csv"} <= set(paths)
    assert paths["metrics"] == tmp_path / "out" / "metrics.json"
    assert all(p.exists() for p in paths.values())
    metrics = json.loads(paths["metrics"].read_text())
    assert {k: metrics[k] for k in ev.metrics} == pytest.approx(ev.metrics)
    # per-class numbers go into metrics.json or, when write_evaluation reports one, their own file
    per_class = json.loads(paths["per_class"].read_text()) if "per_class" in paths else metrics["per_class"]
    assert per_class == ev.per_class
    assert paths["report"].read_text() == ev.report
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(paths["confusion_csv"])
    assert csv.columns.tolist() == ["actual", "predicted"]
    assert csv["actual"].tolist() == [LABELS[i] for i in y_true]
    assert csv["predicted"].tolist() == [LABELS[i] for i in y_pred]


# --- gate ----------------------------------------------------------------------------------------------------

CFG = GateConfig(min_accuracy=0.6, min_macro_f1=0.5, max_regression=0.02)


def m(acc: float, f1: float) -> dict[str, float]:
    return {"accuracy": acc, "macro_f1": f1}


def test_gate_passes_without_champion_when_floors_hold():
    verdict = decide(m(0.8, 0.7), None, CFG)
    assert verdict.passed
    assert [c.name for c in verdict.checks] == ["accuracy", "macro_f1"]
    assert any("no comparable champion" in n for n in verdict.notes)


def test_gate_floors_are_inclusive():
    assert decide(m(0.6, 0.5), None, CFG).passed


@pytest.mark.parametrize(
    "candidate, failing",
    [
        (m(0.59, 0.7), {"accuracy"}),
        (m(0.8, 0.49), {"macro_f1"}),
        (m(0.1, 0.1), {"accuracy", "macro_f1"}),
    ],
)
def test_gate_fails_on_each_floor(candidate, failing):
    verdict = decide(candidate, None, CFG)
    assert not verdict.passed
    assert {c.name for c in verdict.checks if not c.passed} == failing


def test_gate_fails_on_regression_beyond_max():
    verdict = decide(m(0.9, 0.75), m(0.9, 0.80), CFG)
    assert not verdict.passed
    (vs,) = [c for c in verdict.checks if c.name == "macro_f1 vs champion"]
    assert not vs.passed
    assert vs.value == 0.75 and vs.threshold == pytest.approx(0.78)
    assert all(c.passed for c in verdict.checks if c is not vs)


@pytest.mark.parametrize("candidate_f1", [0.785, 0.80, 0.95])
def test_gate_passes_within_max_regression_or_better(candidate_f1: float):
    verdict = decide(m(0.9, candidate_f1), m(0.9, 0.80), CFG)
    assert verdict.passed
    assert [c.name for c in verdict.checks] == ["accuracy", "macro_f1", "macro_f1 vs champion"]
    assert not any("no comparable champion" in n for n in verdict.notes)


def test_gate_floors_still_apply_with_a_champion():
    assert not decide(m(0.5, 0.9), m(0.5, 0.5), CFG).passed


def test_gate_drop_of_exactly_max_regression_passes():
    verdict = decide(m(0.9, 0.47), m(0.9, 0.52), GateConfig(min_accuracy=0, min_macro_f1=0, max_regression=0.05))
    assert verdict.passed


def test_gate_reasons_name_each_check_with_value_and_threshold():
    verdict = decide(m(0.55, 0.70), m(0.9, 0.80), CFG, notes=["champion v3"])
    assert verdict.reasons == [
        "FAIL  accuracy: 0.5500 (needs >= 0.6000)",
        "pass  macro_f1: 0.7000 (needs >= 0.5000)",
        "FAIL  macro_f1 vs champion: 0.7000 (needs >= 0.7800)",
        "champion v3",
    ]
    d = verdict.to_dict()
    assert d["passed"] is False
    assert [c["name"] for c in d["checks"]] == ["accuracy", "macro_f1", "macro_f1 vs champion"]
    assert d["notes"] == ["champion v3"]
