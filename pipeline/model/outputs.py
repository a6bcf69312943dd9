"""What a model folder's logits mean as served, in numpy alone: its labels, the text policy its training data saw,
the calibration temperature, softmax or sigmoids, and the multi-label thresholds.

Shared by the torch ``Predictor`` and the torch-free ``OnnxPredictor``, so both answer alike; importing this module
never imports torch or transformers (scoring with ONNX Runtime stays within its memory budget that way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import CleanConfig
from pipeline.errors import PipelineError

MULTI_LABEL = "multi_label_classification"  # a Hugging Face config's problem_type for sigmoid outputs


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding is minimal; with ``max_tokens``, a batch also
    holds at most that many padded tokens (rows x its longest length), so long texts come in fewer rows."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = [[]]
    for i in order:  # ascending: the text added is the batch's longest
        if batches[-1] and (len(batches[-1]) >= batch_size or (len(batches[-1]) + 1) * lengths[i] > max_tokens):
            batches.append([])
        batches[-1].append(i)
    return batches if order else []


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def probabilities(logits: np.ndarray, multi_label: bool, temperature: float = 1.0) -> np.ndarray:
    """What a model's logits mean as served: independent per-label sigmoids for a multi-label model,
    a temperature-calibrated softmax for a single-label one."""
    if multi_label:
        from scipy.special import expit

        return expit(logits)
    return softmax(logits / temperature)


def check_texts(texts: list[str]) -> None:
    """Refuse a missing or blank text by its position: there is nothing to classify in it."""
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PipelineError(f"text #{i + 1} is empty: give some words to classify")


@dataclass(frozen=True)
class OutputPolicy:
    """A model folder's serving policy, read from its files (config.json, preprocessing.json, calibration.json)."""

    labels: list[str]
    multi_label: bool
    temperature: float
    thresholds: np.ndarray | None  # per-label decision thresholds of a multi-label model; None for single-label
    text_policy: CleanConfig | None  # the cleaning its training data had; None for a folder saved without one

    @classmethod
    def of_folder(cls, model_dir: Path) -> OutputPolicy:
        from pipeline.data.clean import load_text_policy
        from pipeline.model.calibration import load_temperature, load_thresholds

        config = json.loads((Path(model_dir) / "config.json").read_text())
        id2label = config.get("id2label") or {}
        labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
        if not labels:
            raise PipelineError(f"the model in {model_dir} has no label map (id2label in config.json)")
        multi_label = config.get("problem_type") == MULTI_LABEL
        return cls(
            labels,
            multi_label,
            load_temperature(model_dir),
            load_thresholds(model_dir, len(labels)) if multi_label else None,
            load_text_policy(model_dir),
        )

    def prepare(self, texts: list[str]) -> list[str]:
        """The texts as the model saw its training data: the stored cleaning policy applied."""
        if self.text_policy is None:
            return list(texts)
        from pipeline.data.clean import prepare_text

        return [prepare_text(t, self.text_policy) for t in texts]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return probabilities(logits, self.multi_label, self.temperature)
