"""The monitoring columns of a text, the same for the reference and a batch.

- text descriptors that need no downloads: length, word count, mean word length, non-letter, uppercase,
  punctuation, digit and non-ASCII (emoji, accents, curly quotes) shares, URLs and @/u/ r/ mentions;
- the champion's prediction, as serving makes it (stored text policy; sigmoid for a multi-label model): the
  predicted (top) label (categorical) and its probability, the confidence;
- the champion's own sentence embedding: the mean-pooled last hidden state of its encoder.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.model.predict import Predictor

EMBEDDING_NAME = "sentence_embedding"
EMBEDDING_PREFIX = "emb_"
DESCRIPTORS = (
    "length",
    "word_count",
    "mean_word_length",
    "non_letter_share",
    "uppercase_share",
    "punctuation_share",
    "digit_share",
    "non_ascii_share",
    "links_mentions",
)
PREDICTION_NUMERIC = ("confidence",)
PREDICTION_CATEGORICAL = ("predicted_label",)
_LINKS = re.compile(r"https?://\S+|www\.\S+|(?<![\w/])@\w+|(?<![\w/])/?[ur]/\w+")


def describe_text(text: str) -> dict[str, float]:
    """The descriptors of one text (shares are over its non-space characters)."""
    chars = [c for c in text if not c.isspace()]
    n = max(len(chars), 1)
    letters = [c for c in chars if c.isalpha()]
    words = text.split()
    return {
        "length": float(len(text)),
        "word_count": float(len(words)),
        "mean_word_length": len(chars) / max(len(words), 1),
        "non_letter_share": (len(chars) - len(letters)) / n,
        "uppercase_share": sum(c.isupper() for c in letters) / max(len(letters), 1),
        "punctuation_share": sum(unicodedata.category(c).startswith("P") for c in chars) / n,
        "digit_share": sum(c.isdigit() for c in chars) / n,
        "non_ascii_share": sum(ord(c) > 127 for c in chars) / n,
        "links_mentions": float(len(_LINKS.findall(text))),
    }


def text_descriptors(texts: list[str]) -> pd.DataFrame:
    """One row of descriptors per text, columns in ``DESCRIPTORS`` order."""
    return pd.DataFrame([describe_text(t) for t in texts], columns=list(DESCRIPTORS)).astype(float)


def score_texts(predictor: Predictor, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and mean-pooled last-hidden-state embeddings, one forward pass per batch.

    Scored as serving predicts (the ``Predictor``'s stored text policy, then sigmoid for a multi-label model or
    the calibrated softmax), so the monitored predictions are the ones users get.
    """
    if not texts:
        raise PipelineError("no texts to score")
    return predictor.scores(texts, embeddings=True)  # type: ignore[return-value]  # embeddings=True: never None


def scored_frame(texts: list[str], probs: np.ndarray, embeddings: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """The monitoring columns for texts: descriptors, predicted label and confidence, embedding columns."""
    frame = text_descriptors(texts)
    frame["predicted_label"] = [labels[i] for i in probs.argmax(axis=1)]
    frame["confidence"] = probs.max(axis=1).astype(float)
    emb = pd.DataFrame(embeddings, columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(embeddings.shape[1])])
    return pd.concat([frame, emb], axis=1)


def score_frame(predictor: Predictor, texts: list[str]) -> pd.DataFrame:
    """The monitoring columns for texts, scored by the predictor."""
    probs, embeddings = score_texts(predictor, texts)
    return scored_frame(texts, probs, embeddings, predictor.labels)


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(EMBEDDING_PREFIX)]


_PREDICTORS: dict[tuple[str, str, str, int, int], Predictor] = {}


def predictor_for(cfg: Config, model_dir: Path) -> Predictor:
    """A Predictor for the model folder, loaded once per process (the reference and the batch share it)."""
    from pipeline.model.predict import Predictor

    model = cfg.model
    key = (str(model_dir), cfg.train.device, cfg.train.precision, model.max_length, model.inference_batch_size)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = Predictor(
            model_dir, cfg.train.device, cfg.train.precision, model.max_length, model.inference_batch_size
        )
    return _PREDICTORS[key]
