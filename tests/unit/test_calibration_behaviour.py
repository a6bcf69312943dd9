"""Temperature scaling, expected calibration error, and the behavioural suite."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import behaviour
from pipeline.model import calibration
from pipeline.model.inference import softmax

LABELS = list(behaviour.MFT_CASES)


def overconfident(temperature: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports z * temperature (overconfident for T > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 6))
    labels = np.array([rng.choice(6, p=p) for p in softmax(z)])
    return z * temperature, labels


def test_fitted_temperature_recovers_the_overconfidence() -> None:
    logits, labels = overconfident(3.0)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.12)


def test_temperature_lowers_nll_and_ece(tmp_path) -> None:
    logits, labels = overconfident(3.0)
    stats = calibration.calibrate(logits, labels, tmp_path)
    assert stats["val_nll_after"] < stats["val_nll_before"]
    assert stats["val_ece_after"] < 0.5 * stats["val_ece_before"]
    assert calibration.load_temperature(tmp_path) == pytest.approx(stats["temperature"])
    assert calibration.load_temperature(tmp_path / "elsewhere") == 1.0


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    honest = np.tile([0.8, 0.2], (100, 1))  # 80% confident, 80% right
    assert calibration.expected_calibration_error(honest, labels) == pytest.approx(0.0, abs=1e-9)
    sure = np.tile([0.999, 0.001], (100, 1))
    assert calibration.expected_calibration_error(sure, labels) == pytest.approx(0.199, abs=1e-6)


def keyword_model(cues: dict[str, list[str]], labels: list[str]):
    """A transparent stand-in classifier: probability mass on the label whose cue words appear."""

    def predict_proba(texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), len(labels)), 0.02)
        for i, text in enumerate(texts):
            hits = [j for j, label in enumerate(labels) if any(w in text.lower() for w in cues.get(label, []))]
            out[i, hits[0] if hits else 0] = 1.0
        return out / out.sum(axis=1, keepdims=True)

    return predict_proba


CUES = {
    "sadness": ["cried", "hopeless", "lonely", "heartbroken", "miss", "sank"],
    "joy": ["happy", "wonderful", "thrilled", "joyful", "best day"],
    "love": ["adore", "love", "affection", "romantic", "cherished"],
    "anger": ["furious", "angry", "outraged", "irritated", "livid"],
    "fear": ["terrified", "dread", "scared", "panic", "frightened"],
    "surprise": ["amazed", "astonished", "believe my eyes", "surprised", "astounded"],
}


def test_suite_scores_a_model_that_knows_the_cues() -> None:
    report = behaviour.run_suite(keyword_model(CUES, LABELS), LABELS, ["i feel happy today."], tolerance=0.2)
    assert report.mft_accuracy == 1.0
    assert report.invariance_rate == 1.0 and report.mean_probability_shift == pytest.approx(0.0)
    assert report.cases == 30 + len(behaviour.invariance_pairs(["i feel happy today."]))


def test_suite_catches_a_model_that_reacts_to_names_and_punctuation() -> None:
    cues = CUES | {"anger": CUES["anger"] + ["kwame", "!"]}  # a biased model: a name or '!' reads as anger
    report = behaviour.run_suite(keyword_model(cues, LABELS), LABELS, ["what a day"], tolerance=0.2)
    assert report.invariance_rate < 1.0
    kinds = {f["test"] for f in report.failures}
    assert {"invariance (name)", "invariance (punctuation)"} <= kinds


def test_suite_skips_minimum_functionality_for_other_label_sets() -> None:
    labels = ["positive", "negative"]
    report = behaviour.run_suite(keyword_model({}, labels), labels, ["fine."], tolerance=0.2)
    assert report.mft_accuracy is None and report.invariance_rate == 1.0


def test_invariance_pairs_change_exactly_one_thing() -> None:
    pairs = behaviour.invariance_pairs(["the bus was late again!"])
    for kind, a, b in pairs:
        assert a != b
        if kind == "punctuation":
            assert behaviour.TRAILING.sub("", a) == behaviour.TRAILING.sub("", b)
    assert {k for k, _, _ in pairs} == {"name", "place", "number", "punctuation"}


def _multi_label_scores(rng: np.random.Generator, positives: list[int], n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sigmoid-like scores: each label's positives score higher on average than its negatives."""
    targets = np.zeros((n, len(positives)), dtype=np.float32)
    for j, count in enumerate(positives):
        targets[rng.choice(n, count, replace=False), j] = 1
    probs = np.clip(0.25 + 0.4 * targets + rng.normal(0, 0.15, targets.shape), 0, 1)
    return probs, targets


def test_unshrunk_thresholds_are_each_labels_f1_optimum() -> None:
    from sklearn.metrics import f1_score

    probs, targets = _multi_label_scores(np.random.default_rng(0), [120, 40, 9])
    tuned = calibration.tune_thresholds(probs, targets, prior=0)
    for j in range(targets.shape[1]):
        scores = [f1_score(targets[:, j], probs[:, j] >= t, zero_division=0) for t in calibration.THRESHOLD_GRID]
        assert tuned[j] == pytest.approx(calibration.THRESHOLD_GRID[int(np.argmax(scores))])


def test_thresholds_of_rare_labels_lean_on_the_shared_one() -> None:
    probs, targets = _multi_label_scores(np.random.default_rng(1), [200, 6, 0])
    own = calibration.tune_thresholds(probs, targets, prior=0)
    curves = calibration.f1_curves(probs, targets)
    shared = calibration.THRESHOLD_GRID[int(np.argmax(curves[:2].mean(axis=0)))]  # labels with positives only
    shrunk = calibration.tune_thresholds(probs, targets, prior=30)
    assert shrunk[0] == pytest.approx((200 * own[0] + 30 * shared) / 230, abs=1e-6)  # mostly its own
    assert shrunk[1] == pytest.approx((6 * own[1] + 30 * shared) / 36, abs=1e-6)  # mostly the shared one
    assert shrunk[2] == pytest.approx(shared)  # absent from validation: the shared threshold
    assert calibration.tune_thresholds(probs, np.zeros_like(targets)).tolist() == [0.5, 0.5, 0.5]
