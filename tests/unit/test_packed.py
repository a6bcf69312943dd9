"""Packed inference (pipeline/model/packed.py): the same logits as the padded forward pass, in input order, for
fp32, bf16 and int8 models; other models keep the padded path."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model import inference
from pipeline.model.packed import packable, packed_batches, packed_logits
from pipeline.model.runtime import Runtime
from pipeline.serving.backends import BF16, FP32, INT8, FastClassifier
from tests.unit.conftest import CUE_TEXTS

CPU = torch.device("cpu")
# lengths 1 to 40 tokens; equal-length texts (one attention call between them) next to unique lengths
TEXTS = [
    *CUE_TEXTS,
    "ok",
    "sad",
    "i love my dog",
    "i hate my job",
    "my hands are shaking before the exam and i cannot stop thinking about what could go wrong tomorrow "
    "or the day after, when the results come out and everyone will know",
    "what a surprise",
    "ok",
]


def padded_logits(model: object, tokenizer: object, texts: list[str]) -> np.ndarray:
    """The Hugging Face forward pass on one padded batch: the reference."""
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
        return model(**batch).logits.float().numpy()  # type: ignore[operator]


def token_ids(tokenizer: object, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts)["input_ids"]  # type: ignore[operator,index]


@pytest.fixture(scope="module")
def backends(model_dir: Path) -> dict[str, FastClassifier]:
    fp32 = FastClassifier.load(model_dir, FP32, 128, 8)
    return {FP32: fp32, BF16: fp32.converted(BF16), INT8: fp32.converted(INT8)}


def test_fp32_packed_logits_equal_the_padded_forward_in_input_order(backends: dict[str, FastClassifier]) -> None:
    predictor = backends[FP32].predictor
    ids = token_ids(predictor.tokenizer, TEXTS)
    assert len({len(x) for x in ids}) < len(ids) and max(map(len, ids)) > 4 * min(map(len, ids))
    reference = padded_logits(predictor.model, predictor.tokenizer, TEXTS)
    packed = packed_logits(predictor.model, ids, CPU).numpy()
    np.testing.assert_allclose(packed, reference, atol=1e-5)
    assert np.abs(reference[:-1] - reference[1:]).max(axis=1).min() > 1e-3  # rows differ: a swap would fail


@pytest.mark.parametrize("backend", [BF16, INT8])
def test_bf16_and_int8_packed_logits_stay_with_their_padded_forward(
    backends: dict[str, FastClassifier], backend: str
) -> None:
    predictor = backends[backend].predictor
    reference = padded_logits(predictor.model, predictor.tokenizer, TEXTS)
    packed = packed_logits(predictor.model, token_ids(predictor.tokenizer, TEXTS), CPU).float().numpy()
    np.testing.assert_allclose(packed, reference, atol=0.05 * np.abs(reference).max())
    assert (packed.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_predictions_take_the_packed_path_and_match_the_padded_one(
    backends: dict[str, FastClassifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = backends[FP32].predictor
    calls = []
    monkeypatch.setattr(inference, "packed_logits", lambda *a: calls.append(a) or packed_logits(*a))
    packed = predictor.predict_proba(TEXTS)
    assert calls  # a BERT classifier is packed
    monkeypatch.setattr(inference, "packable", lambda model: False)
    np.testing.assert_allclose(packed, predictor.predict_proba(TEXTS), atol=1e-5)


def test_embeddings_for_drift_keep_the_padded_path(
    backends: dict[str, FastClassifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = backends[FP32].predictor
    monkeypatch.setattr(inference, "packed_logits", lambda *a: pytest.fail("packed with embeddings asked"))
    logits, pooled = inference.predict_outputs(
        predictor.model, predictor.tokenizer, TEXTS, Runtime(CPU, None), 128, 4, embeddings=True
    )
    assert pooled is not None and pooled.shape == (len(TEXTS), predictor.model.config.hidden_size)
    np.testing.assert_allclose(logits, padded_logits(predictor.model, predictor.tokenizer, TEXTS), atol=1e-5)


def test_packed_batches_keep_order_and_the_token_budget() -> None:
    assert packed_batches([3, 4, 2, 9, 1], 8) == [[0, 1], [2], [3], [4]]
    assert packed_batches([5, 3, 2], 10) == [[0, 1, 2]]
    assert packed_batches([], 10) == []
    lengths = list(np.random.default_rng(0).integers(1, 40, size=300))
    batches = packed_batches(lengths, 128)
    assert [i for b in batches for i in b] == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 128 for b in batches)
    assert all(sum(lengths[i] for i in a) + lengths[b[0]] > 128 for a, b in itertools.pairwise(batches))


def test_only_an_evaluating_plain_bert_classifier_is_packed(backends: dict[str, FastClassifier]) -> None:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    model = backends[FP32].predictor.model
    assert packable(model)
    model.train()
    try:
        assert not packable(model)  # training: dropout must act, the padded forward does that
    finally:
        model.eval()
    llama = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=100,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_labels=2,
            pad_token_id=0,
        )
    ).eval()
    assert not packable(llama)
    assert not packable(torch.compile(model))
