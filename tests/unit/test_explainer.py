"""pipeline.serving.explainer: explanations on threads of their own, within a budget, each thread with its own
copy of the model; beyond the budget a request is refused at once with a time to retry."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest

from pipeline.serving import explainer as module
from pipeline.serving.explainer import ExplainBusy, Explainer


class Classifier:
    predictor = "the served predictor"


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """explain() waits for ``release``; records the thread, its niceness and the predictor it was given."""
    from pipeline.model import explain as attributions

    seen: dict[str, Any] = {"calls": [], "release": threading.Event(), "running": threading.Semaphore(0)}

    def explain(predictor: Any, text: str, label: str | None = None, n_steps: int = 32) -> str:
        niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform == "linux" else None
        seen["calls"].append((text, threading.current_thread().name, niceness, predictor))
        seen["running"].release()
        assert seen["release"].wait(10)
        return f"explained {text}"

    monkeypatch.setattr(attributions, "explain", explain)
    monkeypatch.setattr(module, "private_predictor", lambda predictor, wait_idle: f"a copy of {predictor}")
    return seen


def test_explanations_beyond_the_budget_are_refused_at_once(blocked: dict[str, Any]) -> None:
    async def scenario() -> list[Any]:
        explainer = Explainer(concurrency=1, queue=1)
        try:
            running = asyncio.ensure_future(explainer.explain(Classifier(), "one", None, 8))
            waiting = asyncio.ensure_future(explainer.explain(Classifier(), "two", None, 8))
            await asyncio.to_thread(blocked["running"].acquire, timeout=10)
            with pytest.raises(ExplainBusy, match="too many explanations at once") as refused:
                await explainer.explain(Classifier(), "three", None, 8)
            assert refused.value.retry_after > 0
            blocked["release"].set()
            answers = [await running, await waiting]
            assert explainer.admitted == 0  # every slot given back
            answers.append(await explainer.explain(Classifier(), "four", None, 8))
            return answers
        finally:
            explainer.stop()

    assert asyncio.run(scenario()) == ["explained one", "explained two", "explained four"]
    [(_, thread, niceness, predictor), *_] = blocked["calls"]
    assert thread.startswith("emotion-explain") and predictor == "a copy of the served predictor"
    if sys.platform == "linux":
        assert niceness == module.LOWEST_PRIORITY


def test_an_explanation_cancelled_while_waiting_is_skipped_and_frees_its_slot(blocked: dict[str, Any]) -> None:
    async def scenario() -> None:
        explainer = Explainer(concurrency=1, queue=1)
        try:
            running = asyncio.ensure_future(explainer.explain(Classifier(), "one", None, 8))
            await asyncio.to_thread(blocked["running"].acquire, timeout=10)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(explainer.explain(Classifier(), "skipped", None, 8), 0.2)
            assert explainer.admitted == 1
            blocked["release"].set()
            await running
        finally:
            explainer.stop()

    asyncio.run(scenario())
    assert [text for text, *_ in blocked["calls"]] == ["one"]


def test_a_private_predictor_shares_nothing_with_the_served_one_and_pauses_for_predictions(
    tiny_classifier_dir: Any,
) -> None:
    import torch

    from pipeline.model.explain import explain
    from pipeline.serving.backends import FastClassifier

    served = FastClassifier.load(tiny_classifier_dir, "torch-bf16", max_length=32, batch_size=8).predictor
    waits: list[float] = []
    own = module.private_predictor(served, waits.append)
    assert own.model is not served.model and own.tokenizer is not served.tokenizer
    assert all(p.dtype == torch.float32 for p in own.model.parameters())
    found = explain(own, "i am so happy today", None, 8)
    assert found.words == ["i", "am", "so", "happy", "today"]
    assert len(waits) >= 2 and set(waits) == {module.MAX_PAUSE_SECONDS}  # before each of the 2 blocks, each pass
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in served.model.modules())  # served: untouched


def test_an_onnx_served_model_cannot_be_explained_and_says_so() -> None:
    from types import SimpleNamespace

    from pipeline.errors import PipelineError

    onnx_served = SimpleNamespace(model=object(), tokenizer=None)  # an ONNX Runtime session: no torch weights
    with pytest.raises(PipelineError, match="explanations need a torch backend"):
        module.private_predictor(onnx_served, lambda seconds: True)
