"""PNG plots people would rather look at than read: confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    """Counts with row-normalized colour, so small classes stay readable."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = max(4.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curve(history: pd.DataFrame, path: Path) -> None:
    """Train and validation loss, and validation macro-F1, per epoch."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if not history.empty:
        left.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
        left.plot(history["epoch"], history["val_loss"], marker="o", label="validation loss")
        right.plot(
            history["epoch"], history["val_macro_f1"], marker="o", color="tab:green", label="validation macro-F1"
        )
        right.plot(
            history["epoch"], history["val_accuracy"], marker="o", color="tab:purple", label="validation accuracy"
        )
        left.legend()
        right.legend()
    left.set_xlabel("epoch")
    left.set_title("Loss")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.set_title("Validation scores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_training_curve(history: list[dict[str, float]], plots_dir: Path) -> dict[str, Path]:
    """The per-epoch history as CSV (for `dvc plots`) and PNG."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(history, columns=["epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"])
    paths = {
        "training_curve_csv": plots_dir / "training_curve.csv",
        "training_curve_png": plots_dir / "training_curve.png",
    }
    frame.to_csv(paths["training_curve_csv"], index=False)
    plot_training_curve(frame, paths["training_curve_png"])
    return paths


def write_data_plots(frame: pd.DataFrame, labels: list[str], plots_dir: Path) -> dict[str, Path]:
    """Class distribution per split (bars) and text length per split (histogram), from the cleaned rows."""
    plt = _pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = {"class_distribution": plots_dir / "class_distribution.png", "text_length": plots_dir / "text_length.png"}
    exploded = frame.explode("label") if frame["label"].map(lambda v: isinstance(v, list)).any() else frame
    counts = pd.crosstab(exploded["label"], exploded["split"]).reindex(labels).fillna(0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 3), 4.5))
    counts.reindex(columns=[s for s in ("train", "validation", "test") if s in counts]).plot.bar(ax=ax)
    ax.set_title("Class distribution per split")
    ax.set_xlabel("label")
    ax.set_ylabel("texts")
    fig.tight_layout()
    fig.savefig(paths["class_distribution"], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # pandas-stubs types .str.len() for string cells only; pandas takes the lengths of the split lists too
    words = frame["text"].str.split().str.len()  # type: ignore[misc]
    for split in ("train", "validation", "test"):
        part = words[frame["split"] == split]
        if len(part):
            ax.hist(part, bins=40, alpha=0.5, density=True, label=f"{split} (median {int(part.median())} words)")
    ax.set_title("Text length per split")
    ax.set_xlabel("words")
    ax.set_ylabel("share of texts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["text_length"], dpi=110)
    plt.close(fig)
    return paths
