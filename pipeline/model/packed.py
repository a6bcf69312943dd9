"""BERT inference on packed tokens: the texts of a batch laid end to end, no padding.

A padded batch spends the linear layers' work (about three quarters of a forward pass) on pad tokens too: texts that
arrive in random order, as a server's requests do, padded 8 at a time to the longest, ran at 150-190 texts/s on one
core, against 255-290 packed (bench/README.md, "Packed inference"). Here the linear layers, layer norms and
activations run on every real token once; attention, the only part that mixes tokens, runs per run of equal-length
texts. Logits equal the padded model's (fp32: within 1e-5). Only ``BertForSequenceClassification`` is packed
(the embedded MiniLM and the tests' tiny BERT); any other model keeps the padded path.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F


def packable(model: Any) -> bool:
    """Whether ``model`` can run packed: a plain, encoder-only ``BertForSequenceClassification`` (not wrapped by
    peft or torch.compile, not an ONNX session) with its pooler."""
    from transformers import BertForSequenceClassification

    return (
        type(model) is BertForSequenceClassification
        and not model.config.is_decoder
        and model.bert.pooler is not None
        and not model.training
    )


def packed_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices in input order, cut into batches of at most ``max_tokens`` real tokens (a longer text alone)."""
    batches: list[list[int]] = []
    tokens = 0
    for i, n in enumerate(lengths):
        if not batches or tokens + n > max_tokens:
            batches.append([])
            tokens = 0
        batches[-1].append(i)
        tokens += n
    return batches


@torch.inference_mode()
def packed_logits(model: Any, input_ids: list[list[int]], device: torch.device) -> torch.Tensor:
    """The classifier's logits for each token-id list, computed on the packed tokens (see the module docstring).
    The texts are packed shortest first, so texts of one length sit side by side and share one attention call."""
    bert = model.bert
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    lengths = [len(input_ids[i]) for i in order]
    flat = torch.tensor([t for i in order for t in input_ids[i]], device=device)[None]
    positions = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
    hidden = bert.embeddings(input_ids=flat, position_ids=positions, token_type_ids=torch.zeros_like(flat))[0]
    runs = [(length, len(list(same))) for length, same in itertools.groupby(lengths)]
    for layer in bert.encoder.layer:
        context = _attention(layer.attention.self, hidden, runs)
        hidden = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    starts = [0, *itertools.accumulate(lengths)][:-1]
    pooled = bert.pooler(hidden[starts][:, None])  # the pooler reads each text's first token
    logits = model.classifier(model.dropout(pooled))
    return logits[torch.tensor(order, device=device).argsort()]  # back to input order


def _attention(attention: Any, hidden: torch.Tensor, runs: list[tuple[int, int]]) -> torch.Tensor:
    """Self-attention of each text over its own tokens, one unmasked call per run of ``(length, texts)`` of equal
    length (a masked call cost about 30x an unmasked one on CPU); the projections run on all tokens at once."""
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query, key, value = attention.query(hidden), attention.key(hidden), attention.value(hidden)
    contexts, start = [], 0
    for length, texts in runs:
        end = start + length * texts
        q, k, v = (t[start:end].view(texts, length, heads, size).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling)
        contexts.append(out.transpose(1, 2).reshape(-1, heads * size))
        start = end
    return torch.cat(contexts)
