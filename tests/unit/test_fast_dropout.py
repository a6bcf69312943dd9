"""pipeline.training.fast_dropout: the same statistics and train/eval behaviour as torch.nn.Dropout, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.training.fast_dropout import FastDropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_matches_p(p: float):
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([1000, 1000]), p, torch.device("cpu"))
    assert mask.dtype is torch.bool and mask.shape == (1000, 1000)
    assert abs(mask.float().mean().item() - (1 - p)) < 0.002  # 1e6 draws: std of the mean is 0.0005
    # every 16-bit lane of a 64-bit draw is used: no lane is biased (a sign bit would show here)
    lanes = mask.view(-1, 4).float().mean(dim=0)
    assert torch.all((lanes - (1 - p)).abs() < 0.004), lanes


def test_forward_scales_kept_values_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    drop = FastDropout(0.25).train()
    x = torch.randn(64, 33, 48, requires_grad=True)
    y = drop(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)


def test_bf16_input_keeps_its_dtype():
    x = torch.randn(8, 16).to(torch.bfloat16)
    assert FastDropout(0.1).train()(x).dtype is torch.bfloat16


def test_eval_is_identity_and_edge_probabilities():
    x = torch.randn(5, 7)
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.count_nonzero(FastDropout(1.0).train()(x)) == 0


def test_masks_follow_the_torch_seed():
    x = torch.ones(100, 100)
    drop = FastDropout(0.1).train()
    torch.manual_seed(7)
    first = drop(x)
    state = torch.get_rng_state()
    second = drop(x)
    torch.set_rng_state(state)  # what a resumed run does
    assert torch.equal(drop(x), second)
    torch.manual_seed(7)
    assert torch.equal(drop(x), first)
    assert not torch.equal(first, second)


def test_swap_keeps_weights_and_the_saved_model(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = sum(type(m) is torch.nn.Dropout for m in model.modules())
    assert plain > 0 and use_fast_dropout(model) == plain
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert sum(type(m) is torch.nn.Dropout for m in reloaded.modules()) == plain


class _Attention(torch.nn.Module):
    training = True


def test_training_attention_is_sdpa_math_with_the_cheaper_mask():
    from pipeline.training.fast_dropout import _attention

    q, k, v = (torch.randn(2, 4, 7, 16) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[0, :, :, 5:] = False  # padding in the first sequence
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    almost_no_dropout, _ = _attention(_Attention(), q, k, v, mask, dropout=1e-9)
    torch.testing.assert_close(almost_no_dropout, reference)
    torch.manual_seed(3)
    dropped, _ = _attention(_Attention(), q, k, v, mask, dropout=0.5)
    assert not torch.allclose(dropped, reference)  # the mask is applied in training


def test_swapped_model_trains_and_evaluates_like_the_original(tiny_model_dir: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.training.fast_dropout import ATTENTION

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer(["i feel great", "so sad and alone today"], padding=True, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    expected = model(**inputs).logits
    use_fast_dropout(model)
    assert model.config._attn_implementation == ATTENTION
    torch.testing.assert_close(model(**inputs).logits, expected)  # evaluation: plain SDPA, no dropout
    model.train()
    torch.manual_seed(5)
    first = model(**inputs).logits
    torch.manual_seed(5)
    again = model(**inputs).logits
    torch.testing.assert_close(first, again)  # seeded
    assert not torch.allclose(first, model(**inputs).logits)  # dropout is on in training
    first.sum().backward()
    query = model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert query is not None and torch.isfinite(query).all() and query.abs().sum() > 0
