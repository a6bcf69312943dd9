"""Batched probability prediction with length-sorted batches and dynamic padding."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# the numpy half lives in outputs (torch-free, for the ONNX scorer); re-exported here for existing callers
from pipeline.model.outputs import length_sorted_batches as length_sorted_batches
from pipeline.model.outputs import probabilities as probabilities
from pipeline.model.outputs import softmax as softmax
from pipeline.model.packed import packable, packed_batches, packed_logits
from pipeline.model.runtime import Runtime


def _mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the last hidden state over real (unpadded) tokens: one sentence embedding per row."""
    mask = attention_mask.unsqueeze(-1).float()
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@torch.inference_mode()
def predict_outputs(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    runtime: Runtime,
    max_length: int,
    batch_size: int,
    embeddings: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw logits for each text, in input order, and (with ``embeddings``) their mean-pooled sentence embeddings
    from the same forward pass; drift monitoring needs both, prediction only the logits. Logits alone of a BERT
    classifier come from packed tokens (``packed``: no padding), else from length-sorted padded batches."""
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    pooled = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) if embeddings else None
    if not texts:
        return logits, pooled
    model.eval()
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    if pooled is None and packable(model):  # budget: the tokens a full padded batch would hold
        for batch in packed_batches([len(ids) for ids in encoded], batch_size * max_length):
            with runtime.autocast():
                out = packed_logits(model, [encoded[i] for i in batch], runtime.device)
            logits[batch] = out.float().cpu().numpy()
        return logits, pooled
    for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(runtime.device)
        with runtime.autocast():
            out = model(**inputs, output_hidden_states=embeddings)
        logits[batch] = out.logits.float().cpu().numpy()
        if pooled is not None:
            pooled[batch] = _mean_pooled(out.hidden_states[-1], inputs["attention_mask"]).cpu().numpy()
    return logits, pooled


def predict_logits(
    model: Any, tokenizer: Any, texts: list[str], runtime: Runtime, max_length: int, batch_size: int
) -> np.ndarray:
    """Raw logits for each text, in input order."""
    return predict_outputs(model, tokenizer, texts, runtime, max_length, batch_size)[0]
