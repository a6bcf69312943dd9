"""Temperature scaling (Guo et al., 2017): one scalar fitted on validation so probabilities mean what they say.

The temperature is saved as ``calibration.json`` in the model folder; ``Predictor`` applies it, so the CLI,
the pyfunc model and the API all serve calibrated probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "calibration.json"
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)
# validation positives at which a label's own threshold and the shared one weigh the same: chosen by 2-fold
# cross-validation within GoEmotions dev (20 repeats, macro-F1 0.487-0.490 for 10 to 50, 0.482 unshrunk)
THRESHOLD_PRIOR = 30.0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    return float(-_log_softmax(logits / temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimizing validation negative log-likelihood."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(found.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def save_calibration(model_dir: Path, temperature: float, stats: dict[str, float]) -> Path:
    path = model_dir / CALIBRATION_FILE
    path.write_text(json.dumps({"method": "temperature", "temperature": temperature, **stats}, indent=2))
    return path


def _saved(model_dir: Path) -> dict:
    path = Path(model_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_temperature(model_dir: Path) -> float:
    """The fitted temperature, or 1.0 for a model folder that was never calibrated."""
    return float(_saved(model_dir).get("temperature", 1.0))


def load_thresholds(model_dir: Path, n_labels: int) -> np.ndarray:
    """Per-label decision thresholds of a multi-label model (0.5 where none were tuned)."""
    saved = _saved(model_dir).get("thresholds")
    return np.array(saved, dtype=np.float32) if saved else np.full(n_labels, 0.5, dtype=np.float32)


def multi_label_decisions(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Labels at or above their threshold; the top label when none is, so every text gets one."""
    decided = (probs >= thresholds).astype(int)
    empty = decided.sum(axis=1) == 0
    decided[empty, probs[empty].argmax(axis=1)] = 1
    return decided


def f1_curves(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """F1 of each label (rows) at each grid threshold (columns): sklearn's F1 counts (zero_division=0), all at once."""
    truth = targets.astype(bool)
    predicted = probs[:, :, None] >= THRESHOLD_GRID[None, None, :]  # texts x labels x grid
    tp = (predicted & truth[:, :, None]).sum(axis=0)
    denominator = predicted.sum(axis=0) + truth.sum(axis=0)[:, None]  # 2tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, prior: float = THRESHOLD_PRIOR) -> np.ndarray:
    """Per-label decision thresholds for multi-label data, tuned on validation.

    A label's own F1-optimal threshold is noise when it has few validation positives (GoEmotions dev has 13 for
    grief), so it is shrunk towards the one threshold that is best for macro-F1 over all labels, in proportion to
    the evidence: t = (n t_label + prior t_shared) / (n + prior) for a label with n positives. Labels absent from
    validation get t_shared.
    """
    curves = f1_curves(probs, targets)
    positives = targets.sum(axis=0)
    present = positives > 0
    if not present.any():
        return np.full(targets.shape[1], 0.5, dtype=np.float32)
    shared = THRESHOLD_GRID[int(np.argmax(curves[present].mean(axis=0)))]
    own = THRESHOLD_GRID[curves.argmax(axis=1)]
    return ((positives * own + prior * shared) / (positives + prior)).astype(np.float32)


def calibrate_multi_label(logits: np.ndarray, targets: np.ndarray, model_dir: Path) -> dict[str, float]:
    """Tune per-label thresholds on validation sigmoid probabilities and save them next to the model."""
    from scipy.special import expit
    from sklearn.metrics import f1_score

    probs = expit(logits)
    thresholds = tune_thresholds(probs, targets)
    stats = {
        "val_macro_f1_at_0.5": float(f1_score(targets, probs >= 0.5, average="macro", zero_division=0)),
        "val_macro_f1_tuned": float(f1_score(targets, probs >= thresholds, average="macro", zero_division=0)),
    }
    path = Path(model_dir) / CALIBRATION_FILE
    path.write_text(
        json.dumps(
            {
                "method": "per-label thresholds",
                "temperature": 1.0,
                "thresholds": [float(t) for t in thresholds],
                **stats,
            },
            indent=2,
        )
    )
    return {"temperature": 1.0, **stats}


def calibrate(logits: np.ndarray, labels: np.ndarray, model_dir: Path) -> dict[str, float]:
    """Fit on validation logits, save next to the model, and return before/after figures."""
    temperature = fit_temperature(logits, labels)
    stats = {
        "val_ece_before": expected_calibration_error(np.exp(_log_softmax(logits)), labels),
        "val_ece_after": expected_calibration_error(np.exp(_log_softmax(logits / temperature)), labels),
        "val_nll_before": nll(logits, labels),
        "val_nll_after": nll(logits, labels, temperature),
    }
    save_calibration(model_dir, temperature, stats)
    return {"temperature": temperature, **stats}
