"""Dropout with a cheaper random mask, for CPU training.

Profiling a bf16 MiniLM training step on this CPU showed ``aten::bernoulli_`` (dropout masks) taking ~19% of
the step: torch draws one Mersenne-Twister number per element. Here one 64-bit draw feeds four elements: each
16-bit lane is compared with a threshold, so an element is kept with probability ``1 - round(p * 65536) / 65536``
(0.899994 for p = 0.1) and kept values are scaled by ``1 / (1 - p)`` as usual. The masks come from torch's
default generator, so runs stay seeded, and a resumed run (which restores that generator) replays exactly.
Evaluation mode is the identity, exactly as ``torch.nn.Dropout``.
"""

from __future__ import annotations

from typing import Any

import torch

_LANES = 4  # 16-bit lanes per 64-bit random draw
_LANE_MIN = -(2**15)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask that is True with probability ``1 - p`` (to 1/65536)."""
    n = shape.numel()
    bits = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64, device=device).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:n].view(shape)
    return lanes >= _LANE_MIN + round(p * 2**16)


def scaled_keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """``1 / (1 - p)`` where kept, 0 where dropped, in ``like``'s dtype.

    Built through uint8 because bool -> bf16 and mixed bool/bf16 arithmetic are unvectorized on CPU (~8x slower);
    a same-dtype multiply is then the whole forward and backward.
    """
    mask = keep_mask(like.shape, p, like.device).view(torch.uint8).to(like.dtype)
    return mask.mul_(1.0 / (1.0 - p))


class FastDropout(torch.nn.Dropout):
    """A drop-in ``torch.nn.Dropout`` (same ``p``, same train/eval behaviour) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        return x * scaled_keep_mask(x, self.p)  # autograd keeps only the mask: it is all the backward needs


ATTENTION = "sdpa_fast_dropout"


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA, except in training with dropout: the same math with the cheaper mask on the attention probabilities.

    torch's SDPA falls back to its math path whenever ``dropout_p > 0`` anyway; only the mask differs.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (
        not module.training
        or dropout == 0.0
        or getattr(module, "is_causal", False)
        or getattr(module, "num_key_value_groups", 1) > 1
        or kwargs.get("position_bias") is not None
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attention_mask is not None:  # the sdpa mask: boolean, True = attend (or an additive float bias)
        scores = (
            scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            if attention_mask.dtype is torch.bool
            else scores + attention_mask
        )
    probs = scores.softmax(dim=-1)
    probs = probs * scaled_keep_mask(probs, dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Swap every plain ``torch.nn.Dropout`` in ``model`` for :class:`FastDropout`; returns how many.

    A model on SDPA attention also gets the cheaper mask on its attention probabilities (see :func:`_attention`).
    Dropout holds no weights and the attention choice is not saved in config.json, so the saved model is unchanged.
    """
    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel) and model.config._attn_implementation == "sdpa":
        _register_attention()
        model.set_attn_implementation(ATTENTION)
    return swapped
