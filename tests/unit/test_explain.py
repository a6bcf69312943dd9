"""pipeline.model.explain: Integrated Gradients word attributions on the tiny BERT that learned cue words."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.model.explain import _quantized_linears, explain, float_model, merge_word_pieces
from pipeline.model.predict import Predictor
from tests.synthetic_text import CUES
from tests.unit.conftest import LABELS

TEXT = "i feel wonderful today because my friends surprised me"


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor(model_dir, device="cpu", precision="fp32")


def cue_sentence(label: str) -> tuple[str, str]:
    """(text, cue word): a cue of ``label`` in the middle of neutral words."""
    cue = CUES[label][1]
    return f"after lunch we went to see my {cue} friend near the old house", cue


def logit_of(predictor: Predictor, ids: list[int], target: int) -> float:
    with torch.no_grad():
        return float(predictor.model(input_ids=torch.tensor([ids])).logits[0, target])


def test_attributions_add_up_to_the_logit_difference_from_the_pad_baseline(predictor: Predictor) -> None:
    result = explain(predictor, TEXT, n_steps=64)
    target = LABELS.index(result.label)
    ids = predictor.tokenizer(TEXT)["input_ids"]
    specials = {predictor.tokenizer.cls_token_id, predictor.tokenizer.sep_token_id}
    baseline = [i if i in specials else predictor.tokenizer.pad_token_id for i in ids]
    difference = logit_of(predictor, ids, target) - logit_of(predictor, baseline, target)
    assert result.logit - result.baseline_logit == pytest.approx(difference, abs=1e-4)
    assert sum(result.scores) - difference == pytest.approx(result.delta, abs=1e-4)  # completeness, up to delta
    assert abs(result.delta) < 0.05 * abs(difference) + 1e-3
    assert result.label == predictor.predict([TEXT])[0].label
    assert result.probability == pytest.approx(predictor.predict_proba([TEXT])[0, target], abs=1e-5)


@pytest.mark.parametrize("label", LABELS)
def test_the_highest_attribution_lands_on_the_cue_word_of_the_predicted_label(predictor: Predictor, label: str):
    text, cue = cue_sentence(label)
    result = explain(predictor, text, n_steps=16)
    assert result.label == label
    assert result.words[max(range(len(result.scores)), key=result.scores.__getitem__)] == cue
    assert max(result.scores) > 0.5 * (result.logit - result.baseline_logit)  # the cue carries most of the logit


def test_words_are_the_text_words_and_a_requested_label_is_explained(predictor: Predictor) -> None:
    result = explain(predictor, "unbelievably, i feel wonderful", label="fear", n_steps=8)
    assert result.label == "fear"
    assert result.words == ["unbelievably", ",", "i", "feel", "wonderful"]
    assert len(result.scores) == len(result.words)


def test_unknown_label_and_empty_text_are_user_errors(predictor: Predictor) -> None:
    with pytest.raises(PipelineError, match=f"unknown label 'bored': choose one of {', '.join(LABELS)}$"):
        explain(predictor, TEXT, label="bored")
    with pytest.raises(PipelineError, match="^the text is empty: give some words to explain$"):
        explain(predictor, "   ")


def test_a_text_longer_than_the_model_reads_is_explained_as_it_is_predicted(predictor: Predictor) -> None:
    text = " ".join(["we walked home along the river"] * 40)  # 240 words, over max_length pieces
    result = explain(predictor, text, n_steps=4)
    assert result.text == text
    assert len(result.words) == predictor.max_length - 2  # one piece per word here, [CLS] and [SEP] aside
    target = LABELS.index(result.label)
    assert result.probability == pytest.approx(predictor.predict_proba([text])[0, target], abs=1e-5)


def test_the_number_of_steps_is_the_integrals(predictor: Predictor) -> None:
    coarse, fine = explain(predictor, TEXT, n_steps=2), explain(predictor, TEXT, n_steps=64)
    assert coarse.scores != pytest.approx(fine.scores, abs=1e-6)  # a 2-step integral is not the 64-step one
    assert abs(fine.delta) <= abs(coarse.delta)


def test_a_multi_label_model_is_explained_with_its_sigmoid_probability(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.conftest import classifier_folder

    folder = classifier_folder(tiny_model_dir, tmp_path / "multi", LABELS, multi_label=True)
    multi = Predictor(folder, device="cpu", precision="fp32")
    result = explain(multi, TEXT, n_steps=4)
    target = LABELS.index(result.label)
    assert result.probability == pytest.approx(multi.predict_proba([TEXT])[0, target], abs=1e-5)
    assert result.probability == pytest.approx(1 / (1 + math.exp(-result.logit)), abs=1e-5)


@pytest.mark.parametrize("backend", ["torch-bf16", "int8"])
def test_fast_backends_are_explained_with_their_own_weights_in_fp32(model_dir: Path, backend: str) -> None:
    from pipeline.serving.backends import FastClassifier

    fast = FastClassifier.load(model_dir, "torch-fp32", 128, 64).converted(backend)
    result = explain(fast.predictor, TEXT, n_steps=64)
    assert abs(sum(result.scores) - (result.logit - result.baseline_logit) - result.delta) < 1e-4
    served = served_logits(fast.predictor, TEXT)[LABELS.index(result.label)]
    if backend == "torch-bf16":  # the served bf16 weights, cast up: the same logit as an fp32 forward on them
        assert result.logit == pytest.approx(fp32_logits(fast.model, fast.predictor, TEXT)[LABELS.index(result.label)])
    assert result.logit == pytest.approx(served, abs=0.05 + 0.05 * abs(served))  # int8: dequantized, biases kept
    text, cue = cue_sentence("fear")
    found = explain(fast.predictor, text, n_steps=16)
    assert found.label == "fear" and found.words[found.scores.index(max(found.scores))] == cue
    assert next(fast.model.parameters()).dtype != torch.float32 or backend == "int8"  # served model untouched


def test_an_int8_model_is_dequantized_for_gradients_with_its_weights_and_biases(model_dir: Path) -> None:
    from pipeline.serving.backends import FastClassifier

    served = FastClassifier.load(model_dir, "torch-fp32", 128, 64).converted("int8").model
    quantized = dict(_quantized_linears(served))
    assert quantized, "the int8 backend quantized no Linear layer"
    floated = float_model(served)
    for name, layer in quantized.items():
        linear = floated.get_submodule(name)
        assert type(linear) is torch.nn.Linear and next(linear.parameters()).dtype == torch.float32, name
        torch.testing.assert_close(linear.weight.data, layer.weight().dequantize())
        torch.testing.assert_close(linear.bias.data, layer.bias().float())
    assert dict(_quantized_linears(served)).keys() == quantized.keys()  # the served model is left as it was


def served_logits(predictor: Predictor, text: str) -> list[float]:
    """The logits of the served model as it runs (bf16 autocast or int8 kernels)."""
    enc = predictor.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return predictor.model(**enc).logits.float()[0].tolist()


def fp32_logits(model: torch.nn.Module, predictor: Predictor, text: str) -> list[float]:
    enc = predictor.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return copy.deepcopy(model).float()(**enc).logits[0].tolist()


def test_merge_word_pieces_sums_pieces_and_drops_special_tokens() -> None:
    text = "unbelievably good"
    words, scores = merge_word_pieces(
        text, [None, 0, 0, 1, None], [[0, 0], [0, 2], [2, 12], [13, 17], [0, 0]], [9.0, 1.0, 2.0, 0.5, 9.0]
    )
    assert words == ["unbelievably", "good"] and scores == [3.0, 0.5]
