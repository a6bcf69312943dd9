"""Why the model chose a label: per-word attributions by Integrated Gradients (Captum's LayerIntegratedGradients
on the word-embedding layer).

The path runs from a baseline where every word piece is the pad token (the special tokens and the attention mask
are kept) to the text. Each word piece's attribution is summed over the embedding dimensions, and the pieces of a
word are summed into the word. By completeness the attributions add up to logit(text) - logit(baseline) of the
explained label, up to the convergence delta (small when ``n_steps`` is large enough).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Explanation:
    text: str  # the text as the model saw it (the training cleaning policy applied)
    label: str
    probability: float  # the label's served probability (calibrated softmax, or sigmoid for multi-label)
    words: list[str]
    scores: list[float]  # one attribution per word; positive = pushes towards the label
    delta: float  # sum(scores) - (logit(text) - logit(baseline)): how far from exact the integral is
    logit: float
    baseline_logit: float


def float_model(model: Any) -> Any:
    """The model with fp32 weights for gradients: itself when already fp32, else a copy with the served weights
    made fp32 (bf16 weights cast up, int8 dynamically quantized Linear layers dequantized)."""
    import torch

    if all(p.dtype == torch.float32 for p in model.parameters()) and not _quantized_linears(model):
        return model
    clone = copy.deepcopy(model).float()
    for name, module in _quantized_linears(clone):
        parent_name, _, child = name.rpartition(".")
        weight, bias = module.weight().dequantize(), module.bias()
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight.data.copy_(weight)
        if bias is not None:
            linear.bias.data.copy_(bias.float())
        setattr(clone.get_submodule(parent_name) if parent_name else clone, child, linear)
    return clone.eval()


def _quantized_linears(model: Any) -> list[tuple[str, Any]]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return [(name, m) for name, m in model.named_modules() if isinstance(m, DynamicLinear)]


def explain(predictor: Any, text: str, label: str | None = None, n_steps: int = 32) -> Explanation:
    """Word attributions for ``label`` (default: the predicted one) of a ``Predictor`` (or a serving
    ``FastClassifier``'s predictor) on one text."""
    import torch
    from captum.attr import LayerIntegratedGradients

    from pipeline.model.inference import probabilities

    if not text.strip():
        raise PipelineError("the text is empty: give some words to explain")
    if label is not None and label not in predictor.labels:
        raise PipelineError(f"unknown label '{label}': choose one of {', '.join(predictor.labels)}")
    prepared = predictor.prepare([text])[0]
    model = float_model(predictor.model)
    tokenizer = predictor.tokenizer
    enc = tokenizer(
        prepared, truncation=True, max_length=predictor.max_length, return_offsets_mapping=True, return_tensors="pt"
    )
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = torch.tensor(tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True))
    baseline = torch.where(special.bool(), ids[0], tokenizer.pad_token_id).unsqueeze(0)

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    with torch.no_grad():
        both = logits(torch.cat([ids, baseline]), torch.cat([mask, mask]))
    probs = probabilities(both[:1].numpy(), predictor.multi_label, predictor.temperature)[0]
    target = predictor.labels.index(label) if label is not None else int(probs.argmax())
    lig = LayerIntegratedGradients(logits, model.get_input_embeddings())
    attributions, delta = lig.attribute(
        ids,
        baselines=baseline,
        additional_forward_args=(mask,),
        target=target,
        n_steps=n_steps,
        internal_batch_size=n_steps,
        return_convergence_delta=True,
    )
    per_piece = attributions.sum(dim=-1)[0].detach().tolist()
    words, scores = merge_word_pieces(prepared, enc.word_ids(0), enc["offset_mapping"][0].tolist(), per_piece)
    return Explanation(
        prepared,
        predictor.labels[target],
        float(probs[target]),
        words,
        scores,
        float(delta[0]),
        float(both[0, target]),
        float(both[1, target]),
    )


def merge_word_pieces(
    text: str, word_ids: list[int | None], offsets: list[list[int]], scores: list[float]
) -> tuple[list[str], list[float]]:
    """Word pieces merged into the words of ``text`` (by the tokenizer's word ids), their scores summed;
    special tokens (no word id) are left out."""
    spans: dict[int, list[int]] = {}
    totals: dict[int, float] = {}
    for word, (start, end), score in zip(word_ids, offsets, scores):
        if word is None:
            continue
        span = spans.setdefault(word, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        totals[word] = totals.get(word, 0.0) + score
    order = sorted(spans)
    return [text[spans[w][0] : spans[w][1]] for w in order], [totals[w] for w in order]
