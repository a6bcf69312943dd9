"""How sure a test score is: percentile-bootstrap intervals over test rows, and paired comparisons of two models.

A resample draws n test rows with replacement; each row's draw count weighs the row. Every classification metric
is a function of per-class true-positive, predicted and actual counts, so one matrix product per resample chunk
gives all metrics of all resamples at once (1000 resamples of 2000 rows in well under a second). The candidate
and the champion are compared on the SAME resamples (paired), so the noise of the test set cancels out of their
difference. ``resample_indices`` is public so a slow reference (sklearn per resample) can check the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

CHUNK_CELLS = 4_000_000  # resamples x rows per chunk: bounds memory on large test sets (32 MB of float64)
ECE_BINS = 15  # as pipeline.model.calibration.expected_calibration_error

Samples = dict[str, np.ndarray]  # metric name -> its value in each resample (or one value: the full test set)


def resample_indices(n: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each resample, in chunks of (resamples, n); the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, samples, chunk):
        yield rng.integers(0, n, size=(min(chunk, samples - start), n))


def _weights(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each row was drawn in each resample: (resamples, n)."""
    offsets = indices + n * np.arange(len(indices))[:, None]
    return np.bincount(offsets.ravel(), minlength=len(indices) * n).reshape(len(indices), n).astype(np.float64)


def _one_hot(ids: np.ndarray, n_labels: int) -> np.ndarray:
    return np.eye(n_labels, dtype=np.float64)[ids]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (sklearn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_samples(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], weights: np.ndarray) -> Samples:
    """Accuracy, macro/weighted (and, multi-label, micro) P/R/F1 and per-class P/R/F1 under each row weighting.

    ``y_true``/``y_pred`` are class ids or multi-hot matrices; ``weights`` is (resamples, rows). Matches sklearn's
    precision_recall_fscore_support(labels=all, zero_division=0) and accuracy_score (subset accuracy if multi-label).
    """
    multi = y_true.ndim == 2
    truth = y_true.astype(np.float64) if multi else _one_hot(y_true, len(labels))
    decided = y_pred.astype(np.float64) if multi else _one_hot(y_pred, len(labels))
    correct = (truth == decided).all(axis=1) if multi else y_true == y_pred
    tp, predicted, actual = weights @ (truth * decided), weights @ decided, weights @ truth
    total = weights.sum(axis=1)
    precision, recall, f1 = _ratio(tp, predicted), _ratio(tp, actual), _ratio(2 * tp, predicted + actual)
    out: Samples = {"accuracy": _ratio(weights @ correct.astype(np.float64), total)}
    support = actual.sum(axis=1, keepdims=True)
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = values.mean(axis=1)
        out[f"weighted_{name}"] = _ratio((values * actual).sum(axis=1, keepdims=True), support)[:, 0]
        for i, label in enumerate(labels):
            out[f"{name}_{label}"] = values[:, i]
    if multi:
        tp_all, pred_all, act_all = tp.sum(axis=1), predicted.sum(axis=1), actual.sum(axis=1)
        out |= {
            "micro_precision": _ratio(tp_all, pred_all),
            "micro_recall": _ratio(tp_all, act_all),
            "micro_f1": _ratio(2 * tp_all, pred_all + act_all),
        }
    return out


def calibration_samples(probs: np.ndarray, y_true: np.ndarray, weights: np.ndarray) -> Samples:
    """Top-label ECE (15 equal-width bins) under each row weighting: sum over bins of |sum of gaps| / rows."""
    confidence = probs.max(axis=1)
    gap = confidence - (probs.argmax(axis=1) == y_true)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, ECE_BINS - 1)
    per_bin = weights @ (_one_hot(which, ECE_BINS) * gap[:, None])
    return {"ece": _ratio(np.abs(per_bin).sum(axis=1), weights.sum(axis=1))}


def bootstrap(n: int, samples: int, seed: int, statistic: Callable[[np.ndarray], Samples]) -> Samples:
    """``statistic`` of each of ``samples`` resamples of n rows, chunk by chunk."""
    chunks = [statistic(_weights(indices, n)) for indices in resample_indices(n, samples, seed)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` share of the bootstrap distribution."""
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def metric_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: list[str],
    probs: np.ndarray | None,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """A percentile-bootstrap interval for every metric of ``classification_samples`` (and ECE given ``probs``)."""

    def statistic(weights: np.ndarray) -> Samples:
        out = classification_samples(y_true, y_pred, labels, weights)
        return out | (calibration_samples(probs, y_true, weights) if probs is not None else {})

    draws = bootstrap(len(y_true), samples, seed, statistic)
    return {key: percentile_interval(values, confidence) for key, values in draws.items()}


@dataclass(frozen=True)
class Difference:
    """Candidate minus champion on the full test set, with its paired-bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class McNemar:
    """Rows only the candidate got right (``gained``) or only the champion got right (``lost``), and the test."""

    gained: int
    lost: int
    p_exact: float  # two-sided exact binomial test on the discordant rows
    p_mid: float  # two-sided mid-p: less conservative, close to nominal size on small counts


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs champion on the same test rows: metric differences and McNemar's test on accuracy."""

    differences: dict[str, Difference]  # accuracy, macro_f1, f1_<label>
    mcnemar: McNemar
    confidence: float
    rows: int


def mcnemar(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> McNemar:
    """McNemar's exact and mid-p tests: is the share of rows only one model gets right different from a coin?"""
    from scipy.stats import binom, binomtest

    gained = int((candidate_correct & ~champion_correct).sum())
    lost = int((~candidate_correct & champion_correct).sum())
    discordant, fewer = gained + lost, min(gained, lost)
    if discordant == 0:
        return McNemar(gained, lost, 1.0, 1.0)
    exact = float(binomtest(fewer, discordant, 0.5).pvalue)
    mid = min(1.0, 2 * (float(binom.cdf(fewer, discordant, 0.5)) - 0.5 * float(binom.pmf(fewer, discordant, 0.5))))
    return McNemar(gained, lost, exact, mid)


def compare(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    labels: list[str],
    samples: int,
    confidence: float,
    seed: int,
) -> PairedComparison:
    """Paired bootstrap of candidate - champion (accuracy, macro-F1, per-class F1) over the same resampled rows."""
    keys = ["accuracy", "macro_f1"] + [f"f1_{label}" for label in labels]

    def difference(weights: np.ndarray) -> Samples:
        ours = classification_samples(y_true, candidate, labels, weights)
        theirs = classification_samples(y_true, champion, labels, weights)
        return {key: ours[key] - theirs[key] for key in keys}

    point = difference(np.ones((1, len(y_true))))
    draws = bootstrap(len(y_true), samples, seed, difference)
    differences = {key: Difference(float(point[key][0]), *percentile_interval(draws[key], confidence)) for key in keys}
    return PairedComparison(
        differences, mcnemar(_correct(y_true, candidate), _correct(y_true, champion)), confidence, len(y_true)
    )


def _correct(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per row: all labels right (exact match for multi-label)."""
    return (y_true == y_pred).all(axis=1) if y_true.ndim == 2 else y_true == y_pred
