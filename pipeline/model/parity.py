"""The parity check: a fast backend is used only when its accuracy (micro-F1 for a multi-label model) on labelled
test texts is within a tolerance of the fp32 model's. Shared by serving's backends and `emotion score`'s ONNX
backends; numpy and pandas only (a scorer running without torch can be checked here).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.errors import PipelineError

CALIBRATION_TEXTS = 256  # validation texts whose activation ranges fix the static int8 scales (all held in memory)


class Scorer(Protocol):
    """What the check needs of a backend: its name, labels, decision rule and probabilities."""

    @property
    def backend(self) -> str: ...

    @property
    def labels(self) -> list[str]: ...

    @property
    def multi_label(self) -> bool: ...

    @property
    def thresholds(self) -> np.ndarray | None: ...

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ParityData:
    """A labelled test split for the parity check, and unlabelled texts of another split to calibrate static int8."""

    texts: list[str]
    labels: list[str]
    source: str
    calibration_texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParityReport:
    backend: str
    passed: bool
    reason: str
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    agreement: float | None = None  # share of texts where both backends pick the same label(s)
    tolerance: float | None = None
    n: int = 0
    source: str | None = None
    seconds: float | None = None
    metric: str = "accuracy"  # what reference_ and candidate_accuracy hold: accuracy, or micro-F1 for multi-label
    dynamic: dict[str, Any] | None = None  # onnx-int8: the refused dynamic quantization's check, when static followed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_parity_data(data_cfg: Any, base_dir: Path) -> ParityData:
    """The test split of ``data_cfg.source`` (read like ingest reads it), e.g. the emotion test split, and a seeded
    sample of its validation split (else train) for static int8 calibration."""
    from pipeline.data import ingest

    frame = ingest.normalize(ingest.read_source(data_cfg, base_dir))
    if "split" not in frame or "label" not in frame:
        raise PipelineError(f"parity data {data_cfg.source!r} has no split/label columns")
    frame = frame[frame["text"].notna() & frame["text"].astype(str).str.strip().astype(bool)]
    test = frame[(frame["split"] == "test") & frame["label"].notna()]
    if test.empty:
        raise PipelineError(f"parity data {data_cfg.source!r} has no labelled test split")
    calibration = frame[frame["split"] == "validation"]
    if calibration.empty:
        calibration = frame[frame["split"] == "train"]
    sample = calibration.sample(min(len(calibration), CALIBRATION_TEXTS), random_state=0)
    return ParityData(test["text"].tolist(), test["label"].tolist(), data_cfg.source, sample["text"].tolist())


def _compare(reference: Scorer, candidate: Scorer, data: ParityData) -> tuple[str, float, float, float]:
    """(metric, reference score, candidate score, agreement): accuracy of the top label for single-label models,
    micro-F1 of the thresholded label sets for multi-label ones (whose gold labels are lists)."""
    ref_probs, cand_probs = reference.predict_proba(data.texts), candidate.predict_proba(data.texts)
    if not reference.multi_label:
        gold = np.array([reference.labels.index(label) for label in data.labels])
        ref, cand = ref_probs.argmax(axis=1), cand_probs.argmax(axis=1)
        return "accuracy", float((ref == gold).mean()), float((cand == gold).mean()), float((ref == cand).mean())
    from sklearn.metrics import f1_score

    from pipeline.model.calibration import multi_label_decisions

    thresholds = reference.thresholds  # the tuned per-label thresholds (0.5 where none were tuned)
    assert thresholds is not None, "a multi-label model has thresholds"
    gold = np.zeros_like(ref_probs, dtype=int)
    for i, item in enumerate(data.labels):
        gold[i, [reference.labels.index(label) for label in ([item] if isinstance(item, str) else item)]] = 1
    ref, cand = multi_label_decisions(ref_probs, thresholds), multi_label_decisions(cand_probs, thresholds)
    return (
        "micro-F1",
        float(f1_score(gold, ref, average="micro", zero_division=0)),
        float(f1_score(gold, cand, average="micro", zero_division=0)),
        float((ref == cand).all(axis=1).mean()),
    )


def parity_check(reference: Scorer, candidate: Scorer, data: ParityData, tolerance: float) -> ParityReport:
    """Compare the candidate's accuracy (micro-F1 for a multi-label model) with the reference's on the same
    labelled texts."""
    start = time.perf_counter()
    given = {label for item in data.labels for label in ([item] if isinstance(item, str) else item)}
    unknown = sorted(given - set(reference.labels))
    if unknown:
        return ParityReport(
            candidate.backend,
            False,
            f"parity data {data.source!r} has labels the model does not know "
            f"({', '.join(unknown[:5])}): "
            "cannot check parity",
            tolerance=tolerance,
            n=len(data.texts),
            source=data.source,
        )
    if not reference.multi_label and any(not isinstance(item, str) for item in data.labels):
        return ParityReport(
            candidate.backend,
            False,
            f"parity data {data.source!r} is multi-label but the model is single-label: cannot check parity; "
            "set serve.parity_source to single-label data",
            tolerance=tolerance,
            source=data.source,
        )
    if candidate.labels != reference.labels:
        return ParityReport(
            candidate.backend,
            False,
            "candidate and reference have different label sets",
            tolerance=tolerance,
            source=data.source,
        )
    metric, ref_score, cand_score, agreement = _compare(reference, candidate, data)
    diff = cand_score - ref_score
    passed = abs(diff) <= tolerance + 1e-9
    reason = (
        f"{candidate.backend} {metric} {cand_score:.4f} vs {reference.backend} {ref_score:.4f} on "
        f"{len(data.texts)} test texts of {data.source!r}: difference {diff * 100:+.2f} points, "
        f"{'within' if passed else 'outside'} the tolerance of {tolerance * 100:.2f} points"
    )
    return ParityReport(
        candidate.backend,
        passed,
        reason,
        ref_score,
        cand_score,
        agreement,
        tolerance,
        len(data.texts),
        data.source,
        round(time.perf_counter() - start, 3),
        metric,
    )
