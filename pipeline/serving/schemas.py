"""The API's request and response bodies (they are also its OpenAPI schema).

The request limits (``serve.max_texts``, ``serve.max_chars``) come from the config, so they are checked by
``PredictRequest.limit_problem`` from a route dependency, not by the model's own validation.
"""

from collections.abc import Sequence
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from pipeline.data.clean import has_visible_text


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
            problem = text_problem(text, "text" if self.text is not None else f"texts[{i}]", max_chars, "classify")
            if problem is not None:
                return problem
        return None


def text_problem(text: str, where: str, max_chars: int, purpose: str) -> str | None:
    """What is wrong with one text of a request (``where`` names it), or None: the one check of every route, so
    /predict and /explain refuse the same texts. A text with nothing to see (NUL, zero-width characters) is
    refused like a blank one: the model would answer it as an empty text."""
    if not text.strip():
        return f"{where} is empty: give some words to {purpose}"
    if len(text) > max_chars:
        return f"{where} is too long: {len(text)} characters > {max_chars}"
    bad = unpaired_surrogate(text)
    if bad is not None:
        return f"{where} is not valid Unicode: a lone surrogate at character {bad}; send UTF-8 text"
    if not has_visible_text(text):
        return (
            f"{where} has no visible character (only control, format or zero-width characters): "
            f"give some words to {purpose}"
        )
    return None


def unpaired_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone UTF-16 surrogate (JSON allows ``"\\ud800"``; the tokenizer does not), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


MAX_VERSION = 2**31 - 1  # the registry's version column is a 32-bit INTEGER (MLflow's SQL store)


def normalised_version(version: str | int | None) -> str | None:
    """A registry version as its canonical positive integer ("01" -> "1"), so one version is never loaded twice;
    None stays None (the champion). ValueError names what is wrong: a number the registry cannot hold is a bad
    request, not a question for the registry."""
    if version is None:
        return None
    text = str(version).strip()
    if not (text.isascii() and text.isdigit()) or not text.lstrip("0"):
        raise ValueError(f"version must be a positive integer, got {str(version)[:40]!r}")
    digits = text.lstrip("0")
    if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
        raise ValueError(f"version must be a positive integer up to {MAX_VERSION}, got {digits[:40]}")
    return digits


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', then the field and index")
    msg: str
    type: str | None


class ErrorResponse(BaseModel):
    """Every refusal's body: what is wrong and what to do; a 422 also lists each problem where it was found."""

    detail: str = Field(description="what is wrong and what to do, in one sentence per problem")
    errors: list[FieldError] | None = Field(None, description="a 422's problems, one per field")


class HealthResponse(BaseModel):
    status: Literal["ok", "no model"]
    model: str = Field(description="the registered model's name")
    version: str | None = Field(description="the version served, None before the first load")
    backend: str | None
    last_check: str | None = Field(description="when the registry was last asked for the champion (UTC)")
    last_error: str | None = Field(description="why the last check failed, if it did")


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
        return text_problem(self.text, "text", max_chars, "explain")


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
