"""The tests' tiny model: a randomly initialised 2-layer BERT (hidden 32) with the embedded model's tokenizer, which
trains in seconds. Shared by the fixtures (tests/conftest.py) and bench/bench_memory.py, which measures the memory
of the machinery around a model rather than of the model."""

from __future__ import annotations

from pathlib import Path


def save_tiny_bert(out: Path) -> Path:
    """Write the tiny BERT and the embedded tokenizer into ``out`` (seeded: the same weights every time)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.model.modeling import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("embedded"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
