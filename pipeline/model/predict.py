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
        from pipeline.model.modeling import load_classifier, load_tokenizer
        from pipeline.model.outputs import OutputPolicy
        from pipeline.model.runtime import choose_runtime

        if not (Path(model_dir) / "config.json").exists():
            raise PipelineError(f"no trained model in {model_dir} (config.json missing): train one with `emotion run`")
        self.model_dir = Path(model_dir)
        self.runtime = choose_runtime(device, precision)
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir)).to(self.runtime.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        # labels, text cleaning, calibration and thresholds: the torch-free policy the ONNX scorer shares
        self.policy = OutputPolicy.of_folder(self.model_dir)
        self.labels = self.policy.labels
        self.text_policy = self.policy.text_policy
        self.temperature = self.policy.temperature
        self.multi_label = self.policy.multi_label
        self.thresholds = self.policy.thresholds

    def prepare(self, texts: list[str]) -> list[str]:
        """The texts as the model saw its training data: the stored cleaning policy applied."""
        return self.policy.prepare(texts)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.scores(texts)[0]

    def scores(self, texts: list[str], embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities as served (sigmoids for multi-label, calibrated softmax otherwise) and, with
        ``embeddings``, mean-pooled sentence embeddings from the same forward pass (drift monitoring)."""
        from pipeline.model.inference import predict_outputs
        from pipeline.model.outputs import check_texts

        check_texts(texts)
        logits, pooled = predict_outputs(
            self.model, self.tokenizer, self.prepare(texts), self.runtime, self.max_length, self.batch_size, embeddings
        )
        return self.policy.probabilities(logits), pooled

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
