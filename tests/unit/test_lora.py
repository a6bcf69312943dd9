"""LoRA fine-tuning (pipeline/training/lora.py) on tiny random BERT, Llama and T5 models, CPU, fp32.

What must hold: only the adapters and the classification head train; the saved folder is an ordinary merged model
that `transformers.pipeline` loads and that scores like the base model with the saved adapter; decoders pad.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.config import PeftSettings, TrainConfig, load_config
from pipeline.errors import PipelineError
from pipeline.model.inference import predict_logits, softmax
from pipeline.model.modeling import load_classifier, load_tokenizer, quantization_config
from pipeline.model.runtime import choose_runtime
from pipeline.training import lora
from pipeline.training.train import train
from tests.conftest import PARAMS
from tests.unit.conftest import LABELS

TEXTS = ["i feel wonderful today", "this makes me furious and i cannot stand it", "i am scared", "oh"]


def _tokenizer(pad: bool) -> object:
    """The embedded model's WordPiece tokenizer; ``pad=False`` drops its padding token, like a Llama tokenizer."""
    from transformers import AutoTokenizer

    from pipeline.model.modeling import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("embedded"))
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids for Llama / T5
    if not pad:
        tokenizer.eos_token = "[SEP]"
        tokenizer.pad_token = None
    return tokenizer


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 32) with no padding token in tokenizer or config, as Llama ships."""
    from transformers import LlamaConfig, LlamaModel

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _tokenizer(pad=False)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.cls_token_id,
        pad_token_id=None,
    )
    LlamaModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer T5 encoder-decoder (d_model 32); its classification head reads the decoder state at [SEP]."""
    from transformers import T5Config, T5Model

    out = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = _tokenizer(pad=True)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5Model(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _cfgs(model_dir: Path, *extra: str):
    cfg = load_config(
        PARAMS,
        [
            f"model.name={model_dir}",
            "model.max_length=64",
            "train.max_steps=4",
            "train.batch_size=16",
            "train.learning_rate=1e-2",
            "train.device=cpu",
            "train.precision=fp32",
            "train.peft.enabled=true",
            *extra,
        ],
        environ={},
    )
    return cfg.model, cfg.train


def _with_adapter(base_dir: Path, model_dir: Path) -> torch.nn.Module:
    """The trained model as LoRA left it: the untouched base plus the saved adapter (and head)."""
    from peft import PeftModel

    tokenizer = load_tokenizer(str(base_dir))
    base = load_classifier(str(base_dir), LABELS, pad_token_id=tokenizer.pad_token_id)
    return PeftModel.from_pretrained(base, model_dir / lora.ADAPTER_DIR).eval()


def _pipeline_probs(model_dir: Path) -> np.ndarray:
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(model_dir), device="cpu")
    rows = clf(TEXTS, top_k=None)
    return np.array([[{d["label"]: d["score"] for d in row}[label] for label in LABELS] for row in rows])


def _assert_merged_export_matches_adapter(base_dir: Path, model_dir: Path) -> None:
    runtime = choose_runtime("cpu", "fp32")
    adapted = _with_adapter(base_dir, model_dir)
    expected = softmax(predict_logits(adapted, load_tokenizer(str(model_dir)), TEXTS, runtime, 64, 64))
    np.testing.assert_allclose(_pipeline_probs(model_dir), expected, atol=1e-5)


@pytest.fixture(scope="module")
def bert_lora(tmp_path_factory: pytest.TempPathFactory, sample_prepared, tiny_model_dir: Path):
    out = tmp_path_factory.mktemp("bert-lora") / "model"
    return train(sample_prepared, *_cfgs(tiny_model_dir), out), out


def test_peft_defaults_of_params_yaml_agree_with_the_config_model():
    raw = yaml.safe_load(PARAMS.read_text())["train"]
    assert raw["peft"] == PeftSettings().model_dump()
    assert raw["gradient_checkpointing"] == TrainConfig().gradient_checkpointing
    assert not PeftSettings().enabled


def test_gpu_lora_llama_recipe_is_a_valid_layer_over_params_yaml():
    import json

    from pipeline.registry.run_log import flatten

    recipe = yaml.safe_load((PARAMS.parent / "recipes" / "gpu-lora-llama.yaml").read_text())
    overrides = [f"{key}={json.dumps(value)}" for key, value in flatten(recipe).items()]
    cfg = load_config(PARAMS, overrides, environ={})
    assert cfg.model.name.startswith("meta-llama/Llama-3.2")
    assert (cfg.train.device, cfg.train.precision, cfg.train.gradient_checkpointing) == ("cuda", "bf16", True)
    assert cfg.train.peft.enabled and cfg.train.peft.rank == 16
    assert cfg.data == load_config(PARAMS, [], environ={}).data  # only model and train are layered


def test_quantized_loading_needs_adapters_and_a_gpu():
    with pytest.raises(PipelineError, match="quantize needs enabled"):
        load_config(PARAMS, ["train.peft.quantize=4bit"], environ={})
    with pytest.raises(PipelineError, match="needs a CUDA GPU.*set train.peft.quantize=none"):
        quantization_config("4bit", torch.device("cpu"))
    assert quantization_config("none", torch.device("cpu")) is None


def test_default_target_modules_per_model_type():
    assert lora.target_modules(PeftSettings(), "bert") == ["query", "value"]
    assert lora.target_modules(PeftSettings(), "llama") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora.target_modules(PeftSettings(), "t5") == ["q", "v"]
    assert lora.target_modules(PeftSettings(target_modules=["key"]), "bert") == ["key"]
    with pytest.raises(PipelineError, match="set train.peft.target_modules"):
        lora.target_modules(PeftSettings(), "no-such-architecture")


def test_bert_lora_trains_only_adapters_and_head(bert_lora, tiny_model_dir: Path):
    result, model_dir = bert_lora
    assert 0 < result.trainable_parameters < result.total_parameters / 5
    adapter = load_file(model_dir / lora.ADAPTER_DIR / "adapter_model.safetensors")
    assert adapter and all("lora_" in key or ".classifier." in key for key in adapter)
    base = load_classifier(str(tiny_model_dir), LABELS).state_dict()
    merged = load_classifier(str(model_dir)).state_dict()
    assert merged.keys() == base.keys()
    changed = {key for key in base if not torch.equal(base[key], merged[key])}
    # merging changed exactly the adapted projections' weights; the fresh head trained; everything else is frozen
    adapted = {f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in range(2) for m in ("query", "value")}
    assert changed - {"classifier.weight", "classifier.bias"} == adapted
    assert "classifier.weight" in changed


def test_bert_lora_export_is_a_plain_model_scoring_like_the_adapter(bert_lora, tiny_model_dir: Path):
    _, model_dir = bert_lora
    assert (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists()
    _assert_merged_export_matches_adapter(tiny_model_dir, model_dir)


def test_llama_lora_pads_with_eos_pools_last_token_and_exports(sample_prepared, tiny_llama_dir: Path, tmp_path):
    assert load_tokenizer(str(tiny_llama_dir)).pad_token == "[SEP]"  # the fixture saved none
    result = train(sample_prepared, *_cfgs(tiny_llama_dir), tmp_path / "model")
    assert result.steps == 4 and np.isfinite(result.history[-1]["train_loss"])
    assert 0 < result.trainable_parameters < result.total_parameters
    saved = load_classifier(str(tmp_path / "model"))
    assert type(saved).__name__ == "LlamaForSequenceClassification"
    assert saved.config.pad_token_id == load_tokenizer(str(tiny_llama_dir)).pad_token_id
    _assert_merged_export_matches_adapter(tiny_llama_dir, tmp_path / "model")
    # last-token pooling skips padding: a text scores the same alone and padded in a batch
    runtime = choose_runtime("cpu", "fp32")
    tokenizer = load_tokenizer(str(tmp_path / "model"))
    alone = predict_logits(saved, tokenizer, TEXTS[3:], runtime, 64, 64)
    batched = predict_logits(saved, tokenizer, TEXTS, runtime, 64, batch_size=4)
    np.testing.assert_allclose(batched[3:], alone, atol=1e-5)


def test_t5_lora_trains_its_classification_head_and_exports(sample_prepared, tiny_t5_dir: Path, tmp_path):
    train(sample_prepared, *_cfgs(tiny_t5_dir), tmp_path / "model")
    adapter = load_file(tmp_path / "model" / lora.ADAPTER_DIR / "adapter_model.safetensors")
    assert any("classification_head" in key for key in adapter)
    _assert_merged_export_matches_adapter(tiny_t5_dir, tmp_path / "model")


def test_gradient_checkpointing_changes_memory_not_results(sample_prepared, tiny_model_dir: Path, tmp_path):
    model_cfg, cfg = _cfgs(tiny_model_dir, "train.max_steps=3")
    checkpointed_cfg = cfg.model_copy(update={"gradient_checkpointing": True})
    assert lora.prepare(load_classifier(str(tiny_model_dir), LABELS), checkpointed_cfg).is_gradient_checkpointing
    plain = train(sample_prepared, model_cfg, cfg, tmp_path / "plain")
    checkpointed = train(sample_prepared, model_cfg, checkpointed_cfg, tmp_path / "checkpointed")
    for a, b in zip(plain.history, checkpointed.history, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
