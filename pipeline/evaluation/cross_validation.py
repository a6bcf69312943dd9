"""K-fold cross-validation: how much a score moves with the rows a model happens to be trained and tested on.

The folds cover the train + validation pool; the test split stays held out, unseen by every fold. Folds are
stratified: ``StratifiedKFold`` for one label per text, iterative stratification (``MultilabelStratifiedKFold``,
Sechidis et al. 2011) for multi-label data, both seeded. Fold ``k`` trains on the other K-1 folds and is scored on
fold ``k``. Model selection (best evaluation, early stopping, weight averaging) and calibration need a validation
set of their own: an inner, stratified slice of the K-1 training folds, as large a share as the validation split is
of the pool. The held-out fold therefore only ever scores, and the estimate covers the whole training recipe,
selection included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.encode import PreparedData
from pipeline.errors import PipelineError

CV_FILE = "cv.json"
TABLE_CSV = "cv_folds.csv"
TABLE_MD = "cv_folds.md"
POOL_SPLITS = ("train", "validation")
HEADLINE = ("macro_f1", "accuracy")  # the metrics of the console line and the model card


@dataclass(frozen=True)
class Fold:
    """One fold's data: ``train``/``validation`` to fit and select on, ``test`` = the held-out fold."""

    index: int  # 1-based
    data: PreparedData


def applies(cv_folds: int, cv_always: bool, official_split: bool) -> bool:
    """Cross-validate when K is set and the source had no split of its own (or always, if asked)."""
    return cv_folds >= 2 and (cv_always or not official_split)


def pool(prepared: PreparedData) -> pd.DataFrame:
    """The rows folds are drawn from: train then validation, renumbered; never test."""
    return pd.concat([prepared.splits[s] for s in POOL_SPLITS], ignore_index=True)


def _targets(frame: pd.DataFrame, n_labels: int) -> np.ndarray:
    """Class ids, or a multi-hot matrix for multi-label rows."""
    if "label_id" in frame:
        return frame["label_id"].to_numpy(dtype=np.int64)
    hot = np.zeros((len(frame), n_labels), dtype=np.int64)
    for row, ids in enumerate(frame["label_ids"]):
        hot[row, list(ids)] = 1
    return hot


def check_class_counts(targets: np.ndarray, labels: list[str], k: int) -> None:
    """Every label needs at least K rows in the pool, or some held-out fold would have none of it."""
    counts = targets.sum(axis=0) if targets.ndim == 2 else np.bincount(targets, minlength=len(labels))
    smallest = int(np.argmin(counts))
    if counts[smallest] < k:
        table = ", ".join(f"{name} {int(n)}" for name, n in zip(labels, counts))
        raise PipelineError(
            f"evaluate.cv_folds={k} is more than the {int(counts[smallest])} train + validation rows of label "
            f"'{labels[smallest]}' (rows per label: {table}): lower evaluate.cv_folds to at most "
            f"{int(counts[smallest])}, or add rows of that label"
        )


def fold_indices(targets: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The held-out row indices of each of K stratified, seeded folds (iterative stratification if multi-hot)."""
    placeholder = np.zeros((len(targets), 1))
    if targets.ndim == 2:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [np.sort(held_out) for _, held_out in splitter.split(placeholder, targets)]


def inner_split(targets: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) indices: a stratified, seeded ``share`` of the training folds for model selection."""
    placeholder = np.zeros((len(targets), 1))
    if targets.ndim == 2:
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        fit, select = next(splitter.split(placeholder, targets))
        return np.sort(fit), np.sort(select)
    from sklearn.model_selection import train_test_split

    index = np.arange(len(targets))
    try:
        fit, select = train_test_split(index, test_size=share, random_state=seed, stratify=targets)
    except ValueError:  # a label with a single row here: a plain seeded split
        fit, select = train_test_split(index, test_size=share, random_state=seed)
    return np.sort(fit), np.sort(select)


def make_folds(prepared: PreparedData, k: int, seed: int) -> list[Fold]:
    """K folds of the train + validation pool, each with its inner selection slice; test rows are never used."""
    rows = pool(prepared)
    labels = prepared.label_map.labels
    targets = _targets(rows, len(labels))
    check_class_counts(targets, labels, k)
    share = len(prepared.splits["validation"]) / max(len(rows), 1)
    if share <= 0:
        raise PipelineError("cross-validation selects each fold's model on a validation slice: the data has none")
    folds = []
    for index, held_out in enumerate(fold_indices(targets, k, seed), start=1):
        rest = np.setdiff1d(np.arange(len(rows)), held_out)
        fit, select = inner_split(targets[rest], share, seed + index)
        splits = {
            "train": rows.iloc[rest[fit]].reset_index(drop=True),
            "validation": rows.iloc[rest[select]].reset_index(drop=True),
            "test": rows.iloc[held_out].reset_index(drop=True),
        }
        folds.append(Fold(index, PreparedData(splits, prepared.label_map)))
    return folds


def point_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics without their bootstrap interval ends (a fold's spread is what CV measures instead)."""
    return {k: v for k, v in metrics.items() if not k.endswith(("_ci_low", "_ci_high"))}


@dataclass
class CrossValidation:
    """Per-fold scores and their mean and (sample, ddof=1) standard deviation per metric."""

    folds: list[dict[str, float]]  # one dict of point metrics per fold, in fold order
    seed: int
    rows: list[int] = field(default_factory=list)  # held-out rows per fold

    @property
    def k(self) -> int:
        return len(self.folds)

    def table(self) -> pd.DataFrame:
        """One row per fold (fold 1..K), one column per metric."""
        return pd.DataFrame(self.folds, index=pd.Index(range(1, self.k + 1), name="fold"))

    @property
    def mean(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.table().mean().items()}

    @property
    def std(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.table().std(ddof=1).fillna(0.0).items()}

    def tracking_metrics(self) -> dict[str, float]:
        """``cv_<metric>_mean`` and ``cv_<metric>_std`` for the parent MLflow run."""
        std = self.std
        return {f"cv_{k}_mean": v for k, v in self.mean.items()} | {f"cv_{k}_std": std[k] for k in self.mean}

    def headline(self) -> str:
        """``macro-F1 0.8123 ± 0.0150, accuracy 0.8500 ± 0.0100 over 5 folds``."""
        mean, std = self.mean, self.std
        parts = [f"{key.replace('_f1', '-F1')} {mean[key]:.4f} ± {std[key]:.4f}" for key in HEADLINE if key in mean]
        return f"{', '.join(parts)} over {self.k} folds"

    def to_dict(self) -> dict[str, object]:
        return {
            "folds": self.k,
            "seed": self.seed,
            "held_out_rows": self.rows,
            "mean": self.mean,
            "std": self.std,
            "per_fold": self.folds,
        }

    def markdown(self) -> str:
        """The per-fold table with mean and std rows, for people (headline metrics first)."""
        table = self.table()
        names = [str(c) for c in table.columns]
        columns = [c for c in HEADLINE if c in names] + [c for c in names if c not in HEADLINE]
        lines = ["| fold | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for fold, row in table[columns].iterrows():
            lines.append(f"| {fold} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
        mean, std = self.mean, self.std
        lines.append("| mean | " + " | ".join(f"{mean[c]:.4f}" for c in columns) + " |")
        lines.append("| std | " + " | ".join(f"{std[c]:.4f}" for c in columns) + " |")
        return "\n".join(lines) + "\n"

    def write(self, root: Path, reports: Path) -> list[Path]:
        """cv.json beside metrics.json, and the per-fold table as CSV and markdown in reports/."""
        reports.mkdir(parents=True, exist_ok=True)
        paths = [root / CV_FILE, reports / TABLE_CSV, reports / TABLE_MD]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2))
        self.table().to_csv(paths[1])
        paths[2].write_text(self.markdown())
        return paths
