"""The API's request and response bodies (they are also its OpenAPI schema).

The request limits (``serve.max_texts``, ``serve.max_chars``) come from the config, so they are checked by
``PredictRequest.limit_problem`` from a route dependency, not by the model's own validation.
"""

from collections.abc import Sequence
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator


class PredictRequest(BaseModel):
    """Give either ``text`` or ``texts``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "i feel wonderful today"},
                {"texts": ["i feel wonderful today", "my hands are shaking before the exam"], "version": "1"},
            ]
        },
    )
    text: StrictStr | None = Field(None, description="one text, 1 to serve.max_chars characters")
    texts: list[StrictStr] | None = Field(
        None, description="1 to serve.max_texts texts of 1 to serve.max_chars characters each"
    )
    version: StrictStr | StrictInt | None = Field(None, description="a registry version; default: the champion")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give either 'text' (one string) or 'texts' (a list of strings), not both or neither")
        if not self.all_texts():
            raise ValueError("'texts' is empty: give at least one text")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])

    def limit_problem(self, max_texts: int, max_chars: int) -> str | None:
        """What is wrong with the texts under these limits (the first problem found), or None."""
        texts = self.all_texts()
        if len(texts) > max_texts:
            return f"too many texts: {len(texts)} > {max_texts} per request; split the batch"
        for i, text in enumerate(texts):
            where = "text" if self.text is not None else f"texts[{i}]"
            if not text.strip():
                return f"{where} is empty: give some words to classify"
            if len(text) > max_chars:
                return f"{where} is too long: {len(text)} characters > {max_chars}"
            bad = unpaired_surrogate(text)
            if bad is not None:
                return f"{where} is not valid Unicode: a lone surrogate at character {bad}; send UTF-8 text"
        return None


def unpaired_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone UTF-16 surrogate (JSON allows ``"\\ud800"``; the tokenizer does not), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def normalised_version(version: str | int | None) -> str | None:
    """A registry version as its canonical positive integer ("01" -> "1"), so one version is never loaded twice;
    None stays None (the champion). ValueError names what is wrong."""
    if version is None:
        return None
    text = str(version).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"version must be a positive integer, got {str(version)[:40]!r}")
    return str(int(text))


class LabelScore(BaseModel):
    label: str = Field(description="the most probable label")
    score: float = Field(description="probability of that label")
    probabilities: dict[str, float] = Field(description="every label's calibrated probability")
    labels: list[str] = Field(description="every predicted label: [label] for a single-label model")


class PredictResponse(BaseModel):
    model: str
    version: str
    backend: str
    predictions: list[LabelScore]


def predict_body(model: str, version: str, backend: str, predictions: Sequence[Any]) -> bytes:
    """The /predict answer (a ``PredictResponse``) as JSON bytes, built directly: validating the dict against the
    response model and encoding it with the json module cost the event loop more than the rest of the route."""
    return orjson.dumps(
        {
            "model": model,
            "version": version,
            "backend": backend,
            "predictions": [
                {
                    "label": p.label,
                    "score": p.score,
                    "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()},
                    "labels": list(p.labels),
                }
                for p in predictions
            ],
        }
    )


class ExplainRequest(BaseModel):
    """One text; the label to explain defaults to the predicted one."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "i feel wonderful today", "label": "joy"}]}
    )
    text: StrictStr = Field(description="one text, 1 to serve.max_chars characters")
    label: StrictStr | None = Field(None, description="the label to explain; default: the predicted label")
    version: StrictStr | StrictInt | None = Field(None, description="a registry version; default: the champion")

    def limit_problem(self, max_chars: int) -> str | None:
        if not self.text.strip():
            return "text is empty: give some words to explain"
        if len(self.text) > max_chars:
            return f"text is too long: {len(self.text)} characters > {max_chars}"
        return None


class ExplainResponse(BaseModel):
    model: str
    version: str
    backend: str
    label: str = Field(description="the explained label")
    probability: float = Field(description="its probability")
    text: str = Field(description="the text as the model saw it (after the training cleaning policy)")
    words: list[str]
    scores: list[float] = Field(description="each word's attribution to the label's logit (Integrated Gradients)")
    delta: float = Field(description="convergence delta: sum(scores) - (logit(text) - logit(all-pad baseline))")
    logit: float
    baseline_logit: float
    n_steps: int
