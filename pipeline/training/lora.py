"""LoRA fine-tuning (peft): frozen encoder or LLM, trainable low-rank adapters and classification head.

Set-up wraps the loaded classifier (optionally with gradient checkpointing and a quantized base); at save the
adapter goes to ``<model>/adapter/`` and is merged into the weights, so the model folder stays an ordinary
Hugging Face folder that `transformers.pipeline`, the API, MLflow and ONNX export load like any other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.config import PeftSettings, TrainConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"

# the attention projections to adapt per model_type: query/value for encoders (the LoRA paper's choice), every
# attention projection for decoder LLMs (more capacity for a small share of parameters)
_DECODER_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "llama": _DECODER_ATTENTION,
    "mistral": _DECODER_ATTENTION,
    "qwen2": _DECODER_ATTENTION,
    "qwen3": _DECODER_ATTENTION,
    "gemma": _DECODER_ATTENTION,
    "gemma2": _DECODER_ATTENTION,
    "phi3": ["qkv_proj", "o_proj"],
}
# freshly initialised modules besides peft's own ("classifier", "score") that must train with the adapters
EXTRA_HEADS: dict[str, list[str]] = {
    "deberta": ["pooler"],
    "deberta-v2": ["pooler"],
    "distilbert": ["pre_classifier"],
    "t5": ["classification_head"],
    "mt5": ["classification_head"],
}


def target_modules(settings: PeftSettings, model_type: str) -> list[str]:
    """The configured target modules, else the default for ``model_type`` (ours, then peft's table)."""
    if settings.target_modules:
        return settings.target_modules
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    found = DEFAULT_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type)
    if not found:
        raise PipelineError(
            f"no default LoRA target modules for model type '{model_type}': set train.peft.target_modules "
            "to the names of its attention projections (e.g. [q_proj, v_proj])"
        )
    return list(found)


def lora_config(settings: PeftSettings, model_type: str) -> Any:
    """The peft LoraConfig for a sequence classifier of ``model_type``."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules(settings, model_type),
        modules_to_save=list(EXTRA_HEADS.get(model_type, [])),  # peft adds "classifier" and "score"
    )


def prepare(model: Any, cfg: TrainConfig) -> Any:
    """The model to train: with gradient checkpointing if asked, wrapped in LoRA adapters when enabled."""
    if cfg.gradient_checkpointing:
        # non-reentrant: works with frozen inputs (LoRA) and keeps the dropout masks of the first pass
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not cfg.peft.enabled:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.peft.quantize != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    wrapped = get_peft_model(model, lora_config(cfg.peft, model.config.model_type))
    trainable, total = parameter_counts(wrapped)
    log.info("LoRA: %d of %d parameters train (%.2f%%)", trainable, total, 100 * trainable / total)
    return wrapped


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a LoRA model counts its adapters and the frozen weights."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def export(model: torch.nn.Module, output_dir: Path) -> torch.nn.Module:
    """The model to save as an ordinary folder: a LoRA model saves its adapter to ``output_dir/adapter`` and
    returns the base model with the adapters merged in (in place); any other model is returned as it is."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    adapter_dir = output_dir / ADAPTER_DIR
    model.save_pretrained(str(adapter_dir))
    if getattr(model.base_model.model, "is_quantized", False):
        return _merged_unquantized(model, adapter_dir)
    return model.merge_and_unload()


def _merged_unquantized(model: Any, adapter_dir: Path) -> torch.nn.Module:
    """Merging into 4/8-bit weights would round the update away: reload the base in bf16 and merge there."""
    from peft import PeftModel

    from pipeline.model.modeling import load_classifier

    base_config = model.base_model.model.config
    base = load_classifier(
        model.peft_config["default"].base_model_name_or_path,
        [base_config.id2label[i] for i in range(base_config.num_labels)],
        base_config.problem_type == "multi_label_classification",
        pad_token_id=base_config.pad_token_id,
        dtype=torch.bfloat16,
    )
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().to(model.device)
