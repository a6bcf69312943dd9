"""Inference from a trained model folder or a registry URI: the label and every label's probability."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import ModelConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# The model section's own defaults, for callers that pass no sizes (the stage layer's evaluation passes no batch
# size yet): the numbers live in the config class and params.yaml only.
_MODEL_DEFAULTS = ModelConfig()


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # the most probable label
    score: float
    probabilities: dict[str, float]
    labels: list[str]  # every predicted label: [label] for single-label models, all above threshold for multi-label


class Predictor:
    """A loaded classifier; batches by length and uses bf16 autocast where the hardware is fast at it."""

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        precision: str = "auto",
        max_length: int = _MODEL_DEFAULTS.max_length,
        batch_size: int = _MODEL_DEFAULTS.inference_batch_size,
    ) -> None:
        from pipeline.data.clean import load_text_policy
        from pipeline.model.calibration import load_temperature, load_thresholds
        from pipeline.model.modeling import load_classifier, load_tokenizer, model_labels
        from pipeline.model.runtime import choose_runtime

        if not (Path(model_dir) / "config.json").exists():
            raise PipelineError(f"no trained model in {model_dir} (config.json missing): train one with `emotion run`")
        self.model_dir = Path(model_dir)
        self.runtime = choose_runtime(device, precision)
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir)).to(self.runtime.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.labels = model_labels(self.model)
        self.text_policy = load_text_policy(self.model_dir)  # texts are cleaned as they were for training
        self.temperature = load_temperature(self.model_dir)  # probabilities are served calibrated
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.thresholds = load_thresholds(self.model_dir, len(self.labels)) if self.multi_label else None

    def prepare(self, texts: list[str]) -> list[str]:
        """The texts as the model saw its training data: the stored cleaning policy applied."""
        if self.text_policy is None:
            return list(texts)
        from pipeline.data.clean import prepare_text

        return [prepare_text(t, self.text_policy) for t in texts]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.scores(texts)[0]

    def scores(self, texts: list[str], embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities as served (sigmoids for multi-label, calibrated softmax otherwise) and, with
        ``embeddings``, mean-pooled sentence embeddings from the same forward pass (drift monitoring)."""
        from pipeline.model.inference import predict_outputs, probabilities

        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise PipelineError(f"text #{i + 1} is empty: give some words to classify")
        logits, pooled = predict_outputs(
            self.model, self.tokenizer, self.prepare(texts), self.runtime, self.max_length, self.batch_size, embeddings
        )
        return probabilities(logits, self.multi_label, self.temperature), pooled

    def predict(self, texts: list[str]) -> list[Prediction]:
        from pipeline.model.calibration import multi_label_decisions

        probs = self.predict_proba(texts)
        chosen = multi_label_decisions(probs, self.thresholds) if self.thresholds is not None else None  # multi-label
        return [
            Prediction(
                text,
                self.labels[int(row.argmax())],
                float(row.max()),
                {label: float(p) for label, p in zip(self.labels, row)},
                [self.labels[j] for j in np.flatnonzero(chosen[i])]
                if chosen is not None
                else [self.labels[int(row.argmax())]],
            )
            for i, (text, row) in enumerate(zip(texts, probs))
        ]


def find_model_folder(root: Path) -> Path:
    """The Hugging Face model folder inside a downloaded MLflow model (or the folder itself)."""
    if (root / "config.json").exists():
        return root
    found = sorted(p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer_config.json").exists())
    if not found:
        raise PipelineError(f"{root} holds no Hugging Face model folder")
    return found[0]
