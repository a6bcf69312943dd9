"""Test-set metrics, classification report and confusion matrix, written where DVC and MLflow expect them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

from pipeline.evaluation.plots import plot_confusion_matrix
from pipeline.model.calibration import expected_calibration_error

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.json"
REPORT_FILE = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion.csv"


@dataclass
class Evaluation:
    metrics: dict[str, float]  # accuracy, macro_/weighted_ precision, recall, f1, f1_<label>, ece (single-label)
    per_class: dict[str, dict[str, float]]
    report: str
    confusion: np.ndarray  # rows: actual label, columns: predicted label (co-occurrence for multi-label)
    labels: list[str]
    y_true: np.ndarray  # class ids, or a multi-hot matrix
    y_pred: np.ndarray

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


def multi_label_decisions(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Labels at or above their threshold; the top label when none is, so every text gets one."""
    decided = (probs >= thresholds).astype(int)
    empty = decided.sum(axis=1) == 0
    decided[empty, probs[empty].argmax(axis=1)] = 1
    return decided


def score(y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: np.ndarray | None = None) -> Evaluation:
    """All the numbers a model card reports, from the truth (ids or multi-hot) and predicted probabilities.

    Multi-label (``y_true`` 2-D): accuracy is exact-match (subset) accuracy; decisions use ``thresholds``.
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
    return Evaluation(metrics, per_class, report, confusion, labels, y_true, y_pred)


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
    }
    paths["metrics"].write_text(json.dumps(evaluation.metrics, indent=2))
    paths["per_class"].write_text(json.dumps(evaluation.per_class, indent=2))
    paths["report"].write_text(evaluation.report)
    pd.DataFrame(evaluation.pairs(), columns=["actual", "predicted"]).to_csv(paths["confusion_csv"], index=False)
    plot_confusion_matrix(evaluation.confusion, evaluation.labels, paths["confusion_png"])
    log.info(
        "test metrics: accuracy %.4f, macro-F1 %.4f\n%s",
        evaluation.metrics["accuracy"],
        evaluation.metrics["macro_f1"],
        evaluation.report,
    )
    return paths


def comparison(candidate: dict[str, float], champion: dict[str, float] | None, labels: list[str]) -> str:
    """Markdown table of challenger vs champion on the same test set."""
    keys = ["accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "ece"] + [
        f"f1_{label}" for label in labels
    ]
    lines = ["| metric | challenger | champion | change |", "|---|---|---|---|"]
    for key in keys:
        mine, theirs = candidate.get(key), (champion or {}).get(key)
        if mine is None:
            continue
        change = f"{mine - theirs:+.4f}" if theirs is not None else ""
        lines.append(f"| {key} | {mine:.4f} | {'' if theirs is None else f'{theirs:.4f}'} | {change} |")
    return "\n".join(lines) + "\n"
