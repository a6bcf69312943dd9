"""pipeline.evaluation.intervals: bootstrap intervals (against a slow sklearn reference) and paired comparisons."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from pipeline.config import EvaluateConfig
from pipeline.evaluation import intervals
from pipeline.evaluation.evaluate import score
from pipeline.model.calibration import expected_calibration_error

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def predictions(n: int, right: float, seed: int = 0, k: int = len(LABELS)) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and decisions that are right on about ``right`` of the rows."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    return y_true, np.where(rng.random(n) < right, y_true, rng.integers(0, k, n))


def multi_hot(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, len(LABELS))) < 0.3).astype(int)
    return y_true, np.where(rng.random(y_true.shape) < 0.85, y_true, 1 - y_true)


def probabilities(y_pred: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = rng.random((len(y_pred), len(LABELS)))
    probs[np.arange(len(y_pred)), y_pred] += 1.0 + rng.random(len(y_pred))  # argmax is y_pred
    return probs / probs.sum(axis=1, keepdims=True)


def reference(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None, idx: np.ndarray) -> dict[str, float]:
    """The metrics of one resample, by sklearn (and the project's ECE) on the resampled rows."""
    t, p, ids = y_true[idx], y_pred[idx], list(range(len(LABELS)))
    out = {"accuracy": accuracy_score(t, p)}
    for average in ("macro", "weighted") + (("micro",) if y_true.ndim == 2 else ()):
        prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=ids, average=average, zero_division=0)
        out |= {f"{average}_precision": prec, f"{average}_recall": rec, f"{average}_f1": f1}
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=ids, zero_division=0)
    out |= {f"f1_{label}": f1[i] for i, label in enumerate(LABELS)}
    out |= {f"precision_{label}": prec[i] for i, label in enumerate(LABELS)}
    if probs is not None:
        out["ece"] = expected_calibration_error(probs[idx], t)
    return out


@pytest.mark.parametrize("multi", [False, True])
def test_intervals_equal_a_slow_sklearn_bootstrap_on_the_same_resamples(multi: bool) -> None:
    y_true, y_pred = multi_hot(30) if multi else predictions(30, 0.6)
    probs = None if multi else probabilities(y_pred)
    fast = intervals.metric_intervals(y_true, y_pred, LABELS, probs, 100, 0.9, seed=7)

    draws = [reference(y_true, y_pred, probs, idx) for chunk in intervals.resample_indices(30, 100, 7) for idx in chunk]
    assert len(draws) == 100
    for key in draws[0]:
        slow = np.quantile([d[key] for d in draws], [0.05, 0.95])
        assert fast[key] == pytest.approx(tuple(slow), abs=1e-12), key


def test_intervals_contain_the_point_estimate_for_every_metric() -> None:
    y_true, y_pred = predictions(300, 0.7)
    evaluation = score(y_true, probabilities(y_pred), LABELS, uncertainty=EvaluateConfig(bootstrap_samples=500))
    metrics = evaluation.metrics
    points = [key for key in metrics if "_ci_" not in key]
    assert {"accuracy", "macro_f1", "ece", "f1_joy"} <= set(points)
    for key in points:
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    for label, values in evaluation.per_class.items():
        for m in ("precision", "recall", "f1"):
            assert values[f"{m}_ci_low"] <= values[m] <= values[f"{m}_ci_high"], (label, m)


def test_multi_label_scores_get_intervals_too() -> None:
    y_true, y_pred = multi_hot(200)
    probs = np.clip(y_pred * 0.8 + 0.1, 0, 1)  # decisions at threshold 0.5 reproduce y_pred
    metrics = score(y_true, probs, LABELS).metrics
    for key in ("accuracy", "macro_f1", "micro_f1", "f1_love"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert "ece" not in metrics


def test_intervals_shrink_with_more_rows() -> None:
    widths = []
    for n in (100, 2000):
        y_true, y_pred = predictions(n, 0.7)
        low, high = intervals.metric_intervals(y_true, y_pred, LABELS, None, 1000, 0.95, 0)["macro_f1"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(20) as wide


def test_intervals_are_reproducible_with_the_seed() -> None:
    y_true, y_pred = predictions(150, 0.7)
    first = intervals.metric_intervals(y_true, y_pred, LABELS, None, 300, 0.95, seed=1)
    assert intervals.metric_intervals(y_true, y_pred, LABELS, None, 300, 0.95, seed=1) == first
    assert intervals.metric_intervals(y_true, y_pred, LABELS, None, 300, 0.95, seed=2) != first


def test_higher_confidence_gives_a_wider_interval() -> None:
    y_true, y_pred = predictions(150, 0.7)
    narrow = intervals.metric_intervals(y_true, y_pred, LABELS, None, 500, 0.8, 0)["accuracy"]
    wide = intervals.metric_intervals(y_true, y_pred, LABELS, None, 500, 0.99, 0)["accuracy"]
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_thousand_resamples_of_two_thousand_rows_take_well_under_seconds() -> None:
    y_true, y_pred = predictions(2000, 0.8)
    probs = probabilities(y_pred)
    intervals.metric_intervals(y_true, y_pred, LABELS, probs, 100, 0.95, 0)  # warm-up
    start = time.perf_counter()
    intervals.metric_intervals(y_true, y_pred, LABELS, probs, 1000, 0.95, 0)
    intervals.compare(y_true, y_pred, predictions(2000, 0.8, seed=1)[1], LABELS, 1000, 0.95, 0)
    assert time.perf_counter() - start < 5.0


def test_large_test_sets_are_resampled_in_bounded_chunks() -> None:
    chunks = list(intervals.resample_indices(100_000, 50, 0))
    assert (
        len(chunks) == 2 and sum(len(c) for c in chunks) == 50 and max(c.size for c in chunks) <= intervals.CHUNK_CELLS
    )


def test_identical_models_differ_by_exactly_zero() -> None:
    y_true, y_pred = predictions(100, 0.7)
    paired = intervals.compare(y_true, y_pred, y_pred, LABELS, 300, 0.95, 0)
    assert all((d.value, d.low, d.high) == (0.0, 0.0, 0.0) for d in paired.differences.values())
    assert paired.mcnemar == intervals.McNemar(0, 0, 1.0, 1.0)


def test_paired_difference_matches_the_difference_of_the_point_scores() -> None:
    y_true, champion = predictions(200, 0.8)
    candidate = champion.copy()
    candidate[:30] = (y_true[:30] + 1) % len(LABELS)  # 30 texts wrong that may have been right
    paired = intervals.compare(y_true, candidate, champion, LABELS, 500, 0.95, 0)
    ours = score(y_true, probabilities(candidate), LABELS).metrics
    theirs = score(y_true, probabilities(champion), LABELS).metrics
    for key in ("accuracy", "macro_f1", "f1_joy"):
        assert paired.differences[key].value == pytest.approx(ours[key] - theirs[key])
    macro = paired.differences["macro_f1"]
    assert macro.low <= macro.value <= macro.high < 0  # significantly worse


def test_mcnemar_exact_and_mid_p_on_known_counts() -> None:
    candidate = np.array([False] * 10 + [True] * 5)
    champion = np.array([True] * 10 + [True] * 5)
    test = intervals.mcnemar(candidate, champion)
    assert (test.gained, test.lost) == (0, 10)
    assert test.p_exact == pytest.approx(2 * 0.5**10)  # both tails of Binomial(10, 1/2) at 0
    assert test.p_mid == pytest.approx(0.5**10)  # minus half the probability of the observed count, twice
    even = intervals.mcnemar(np.array([True, False]), np.array([False, True]))
    assert even.p_exact == 1.0 and even.p_mid == pytest.approx(1.0)
