"""Inference from a trained model folder or a registry URI: the label and every label's probability."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    score: float
    probabilities: dict[str, float]


class Predictor:
    """A loaded classifier; batches by length and uses bf16 autocast where the hardware is fast at it."""

    def __init__(self, model_dir: Path, device: str = "auto", precision: str = "auto", max_length: int = 128,
                 batch_size: int = 64) -> None:
        from pipeline.calibration import load_temperature
        from pipeline.modeling import load_classifier, load_tokenizer
        from pipeline.runtime import choose_runtime

        if not (Path(model_dir) / "config.json").exists():
            raise PipelineError(f"no trained model in {model_dir} (config.json missing): train one with `emotion run`")
        self.model_dir = Path(model_dir)
        self.runtime = choose_runtime(device, precision)
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir)).to(self.runtime.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.temperature = load_temperature(self.model_dir)  # probabilities are served calibrated

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        from pipeline.inference import predict_logits, softmax

        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise PipelineError(f"text #{i + 1} is empty: give some words to classify")
        logits = predict_logits(self.model, self.tokenizer, list(texts), self.runtime, self.max_length, self.batch_size)
        return softmax(logits / self.temperature)

    def predict(self, texts: list[str]) -> list[Prediction]:
        probs = self.predict_proba(texts)
        return [
            Prediction(text, self.labels[int(row.argmax())], float(row.max()),
                       {label: float(p) for label, p in zip(self.labels, row)})
            for text, row in zip(texts, probs)
        ]


def find_model_folder(root: Path) -> Path:
    """The Hugging Face model folder inside a downloaded MLflow model (or the folder itself)."""
    if (root / "config.json").exists():
        return root
    found = sorted(p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer_config.json").exists())
    if not found:
        raise PipelineError(f"{root} holds no Hugging Face model folder")
    return found[0]
