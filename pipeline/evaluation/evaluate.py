"""Test-set metrics with bootstrap intervals, classification report and confusion matrix, and the per-row
predictions (so the champion can be compared on the same rows), written where DVC and MLflow expect them.

Every metric ``m`` comes with ``m_ci_low`` and ``m_ci_high`` beside it (flat floats: MLflow, `dvc metrics` and
readers of the point values keep working); per_class.json has ``precision/recall/f1_ci_low/high`` per class.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

from pipeline.config import EvaluateConfig
from pipeline.errors import PipelineError
from pipeline.evaluation.intervals import PairedComparison, metric_intervals
from pipeline.evaluation.plots import plot_confusion_matrix
from pipeline.model.calibration import expected_calibration_error, multi_label_decisions

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.json"
REPORT_FILE = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion.csv"
PREDICTIONS_FILE = "test_predictions.npz"  # y_true, y_pred, probs per test row, in test-split order


@dataclass
class Evaluation:
    metrics: dict[str, float]  # accuracy, macro_/weighted_ precision, recall, f1, f1_<label>, ece; each m_ci_low/high
    per_class: dict[str, dict[str, float]]
    report: str
    confusion: np.ndarray  # rows: actual label, columns: predicted label (co-occurrence for multi-label)
    labels: list[str]
    y_true: np.ndarray  # class ids, or a multi-hot matrix
    y_pred: np.ndarray
    probs: np.ndarray  # per row and label: what the paired comparison with another model is made from

    @property
    def multi_label(self) -> bool:
        return self.y_true.ndim == 2

    def pairs(self) -> list[tuple[str, str]]:
        """(actual, predicted) label pairs behind the confusion matrix, for `dvc plots`."""
        if not self.multi_label:
            return [(self.labels[a], self.labels[p]) for a, p in zip(self.y_true, self.y_pred)]
        return [
            (self.labels[a], self.labels[p])
            for t, q in zip(self.y_true, self.y_pred)
            for a in np.flatnonzero(t)
            for p in np.flatnonzero(q)
        ]


def score(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray | None = None,
    uncertainty: EvaluateConfig | None = None,
) -> Evaluation:
    """All the numbers a model card reports, from the truth (ids or multi-hot) and predicted probabilities.

    Multi-label (``y_true`` 2-D): accuracy is exact-match (subset) accuracy; decisions use ``thresholds``.
    Each metric gets a percentile-bootstrap interval over the test rows (``uncertainty``: samples, level, seed).
    """
    multi = y_true.ndim == 2
    ids = list(range(len(labels)))
    if multi:
        y_true = y_true.astype(int)
        y_pred = multi_label_decisions(probs, thresholds if thresholds is not None else np.full(len(labels), 0.5))
        confusion = y_true.T @ y_pred
        metrics = {"accuracy": float(accuracy_score(y_true, y_pred))}
    else:
        y_pred = probs.argmax(axis=1)
        confusion = confusion_matrix(y_true, y_pred, labels=ids)
        metrics = {"accuracy": float(accuracy_score(y_true, y_pred)), "ece": expected_calibration_error(probs, y_true)}
    for average in ("macro", "weighted") + (("micro",) if multi else ()):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
        metrics |= {f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)}
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    per_class = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, name in enumerate(labels)
    }
    metrics |= {f"f1_{name}": values["f1"] for name, values in per_class.items()}
    report = classification_report(y_true, y_pred, labels=ids, target_names=labels, digits=4, zero_division=0)
    uncertainty = uncertainty or EvaluateConfig()
    ci = metric_intervals(
        y_true,
        y_pred,
        labels,
        None if multi else probs,
        uncertainty.bootstrap_samples,
        uncertainty.confidence,
        uncertainty.seed,
    )
    metrics |= {f"{key}_ci_{end}": ci[key][i] for key in list(metrics) for i, end in enumerate(("low", "high"))}
    for name, values in per_class.items():
        values |= {
            f"{m}_ci_{end}": ci[f"{m}_{name}"][i]
            for m in ("precision", "recall", "f1")
            for i, end in enumerate(("low", "high"))
        }
    return Evaluation(metrics, per_class, report, confusion, labels, y_true, y_pred, probs)


def with_interval(metrics: dict[str, float], key: str, digits: int = 4) -> str:
    """``0.8123 [0.7900, 0.8300]``: the point value and, when there is one, its interval."""
    text = f"{metrics[key]:.{digits}f}"
    if f"{key}_ci_low" in metrics:
        text += f" [{metrics[f'{key}_ci_low']:.{digits}f}, {metrics[f'{key}_ci_high']:.{digits}f}]"
    return text


def save_predictions(evaluation: Evaluation, path: Path) -> Path:
    """The per-row truth, decisions and probabilities: the candidate's side of a paired champion comparison."""
    np.savez_compressed(path, y_true=evaluation.y_true, y_pred=evaluation.y_pred, probs=evaluation.probs)
    return path


def load_predictions(path: Path, y_true: np.ndarray) -> np.ndarray:
    """The saved decisions per test row, checked to belong to this test set (``y_true``, same order)."""
    if not path.exists():
        raise PipelineError(f"{path} is missing: run `emotion evaluate` on this model first")
    with np.load(path) as saved:
        if saved["y_true"].shape != y_true.shape or not np.array_equal(saved["y_true"], y_true):
            raise PipelineError(f"{path} belongs to another test set: run `emotion evaluate` on this model first")
        return saved["y_pred"]


def write_evaluation(evaluation: Evaluation, out_dir: Path, plots_dir: Path) -> dict[str, Path]:
    """metrics.json, the text report, the confusion matrix as PNG and as DVC-plot CSV."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / METRICS_FILE,
        "per_class": out_dir / PER_CLASS_FILE,
        "report": out_dir / REPORT_FILE,
        "confusion_png": plots_dir / CONFUSION_PNG,
        "confusion_csv": plots_dir / CONFUSION_CSV,
        "predictions": out_dir / PREDICTIONS_FILE,
    }
    paths["metrics"].write_text(json.dumps(evaluation.metrics, indent=2))
    paths["per_class"].write_text(json.dumps(evaluation.per_class, indent=2))
    paths["report"].write_text(evaluation.report)
    save_predictions(evaluation, paths["predictions"])
    pd.DataFrame(evaluation.pairs(), columns=["actual", "predicted"]).to_csv(paths["confusion_csv"], index=False)
    plot_confusion_matrix(evaluation.confusion, evaluation.labels, paths["confusion_png"])
    log.info(
        "test metrics: accuracy %s, macro-F1 %s\n%s",
        with_interval(evaluation.metrics, "accuracy"),
        with_interval(evaluation.metrics, "macro_f1"),
        evaluation.report,
    )
    return paths


def comparison(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    labels: list[str],
    paired: PairedComparison | None = None,
) -> str:
    """Markdown table of challenger vs champion on the same test set, with intervals; the change column shows the
    paired-bootstrap interval of the difference where there is one."""
    keys = ["accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "ece"] + [
        f"f1_{label}" for label in labels
    ]
    differences = paired.differences if paired is not None else {}
    lines = ["| metric | challenger | champion | change |", "|---|---|---|---|"]
    for key in keys:
        if key not in candidate:
            continue
        theirs = with_interval(champion, key) if champion and key in champion else ""
        change = f"{candidate[key] - champion[key]:+.4f}" if champion and key in champion else ""
        if key in differences:
            diff = differences[key]
            change = f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"
        lines.append(f"| {key} | {with_interval(candidate, key)} | {theirs} | {change} |")
    return "\n".join(lines) + "\n"
