"""Batched probability prediction with length-sorted batches and dynamic padding."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.runtime import Runtime


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding is minimal."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict_logits(model: Any, tokenizer: Any, texts: list[str], runtime: Runtime,
                   max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Raw logits for each text, in input order."""
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    model.eval()
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(runtime.device)
        with runtime.autocast():
            logits = model(**inputs).logits
        out[batch] = logits.float().cpu().numpy()
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
