"""A classifier that runs without torch: the model folder's fast tokenizer through the ``tokenizers`` library, the
ONNX export through ONNX Runtime, and the ``Predictor``'s own text policy, calibration and label rule
(``outputs.OutputPolicy``), so it answers as the torch model does.

Batch scoring uses it to stay small: torch and transformers' modeling code cost about 450 MB before a text is read,
ONNX Runtime and ``tokenizers`` a fraction of that. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model.onnx_export import feed, session
from pipeline.model.outputs import OutputPolicy, check_texts, length_sorted_batches

# padded tokens per forward pass: ORT's activations grow with rows x length (attention with length squared), so 64
# texts cut at 128 tokens took the MiniLM session from 205 to 638 MiB; with this cap they run 16 at a time (344 MiB),
# and texts of up to 32 tokens, most of the emotion data, still 64 (speed unchanged within noise; bench/README.md)
MAX_BATCH_TOKENS = 2048
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict with its content."""
    return value.get("content") if isinstance(value, dict) else value


class FastTokenizer:
    """The folder's tokenizer.json with the transformers tokenizer's settings for classification: special tokens
    added, truncation to ``max_length`` (longest first, from the right), batches padded to their longest member with
    the pad token (the end-of-sequence token when there is none, as ``modeling.load_tokenizer`` does)."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        path = Path(model_dir) / TOKENIZER_FILE
        if not path.exists():
            raise PipelineError(
                f"{model_dir} has no {TOKENIZER_FILE} (a fast tokenizer), which the ONNX backends need: "
                "save the tokenizer with transformers (`save_pretrained`), or score with --backend torch"
            )
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        settings = self._settings(Path(model_dir))
        pad = _token_text(settings.get("pad_token")) or _token_text(settings.get("eos_token"))
        pad_id = self.tokenizer.token_to_id(pad) if pad else None
        if pad_id is None:
            raise PipelineError(f"the tokenizer in {model_dir} has neither a padding nor an end-of-sequence token")
        self.pad_id: int = pad_id
        self.pad_left = settings.get("padding_side") == "left"

    @staticmethod
    def _settings(model_dir: Path) -> dict[str, Any]:
        path = model_dir / TOKENIZER_CONFIG
        return json.loads(path.read_text()) if path.exists() else {}

    def encode(self, texts: list[str]) -> list[Any]:
        """One ``tokenizers.Encoding`` per text (ids, type ids and attention mask, truncated, not padded)."""
        return list(self.tokenizer.encode_batch(texts))

    def pad(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` of a batch, padded to its longest member."""
        width = max(len(e.ids) for e in encodings)
        arrays = {
            name: np.full((len(encodings), width), self.pad_id if name == "input_ids" else 0, dtype=np.int64)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            cols = slice(width - n, width) if self.pad_left else slice(0, n)
            arrays["input_ids"][row, cols] = encoding.ids
            arrays["attention_mask"][row, cols] = encoding.attention_mask
            arrays["token_type_ids"][row, cols] = encoding.type_ids
        return arrays


class OnnxPredictor:
    """``Predictor.predict_proba`` on an ONNX Runtime session: same cleaning, truncation, length-sorted batches,
    calibration and thresholds. ``backend`` names the ONNX file's kind (onnx-fp32 or onnx-int8) for reports."""

    def __init__(
        self,
        model_dir: Path,
        onnx_file: Path,
        backend: str,
        max_length: int,
        batch_size: int,
        threads: int = 0,
    ) -> None:
        if not (Path(model_dir) / "config.json").exists():
            raise PipelineError(f"no trained model in {model_dir} (config.json missing): train one with `emotion run`")
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.batch_size = batch_size
        self.policy = OutputPolicy.of_folder(self.model_dir)
        self.tokenizer = FastTokenizer(self.model_dir, max_length)
        self.session = session(onnx_file, threads)  # 0 threads: ONNX Runtime's default, one per physical core
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def labels(self) -> list[str]:
        return self.policy.labels

    @property
    def multi_label(self) -> bool:
        return self.policy.multi_label

    @property
    def thresholds(self) -> np.ndarray | None:
        return self.policy.thresholds

    def logits(self, texts: list[str]) -> np.ndarray:
        """Raw logits per text, in input order (the texts already cleaned)."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode(texts)
        lengths = [len(e.ids) for e in encodings]
        for batch in length_sorted_batches(lengths, self.batch_size, MAX_BATCH_TOKENS):
            inputs = self.tokenizer.pad([encodings[i] for i in batch])
            out[batch] = self.session.run(["logits"], feed(self.input_names, inputs))[0]
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Every label's probability per text, as ``Predictor.predict_proba`` gives it."""
        check_texts(texts)
        return self.policy.probabilities(self.logits(self.policy.prepare(texts)))
