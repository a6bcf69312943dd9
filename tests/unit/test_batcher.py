"""pipeline.serving.batcher: the texts of requests waiting together run as one batch, in queue order, one forward
pass per model; busy/idle, the bounded queue, stopping and the metrics it keeps."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.serving.batcher import Batcher, QueueFull
from pipeline.serving.metrics import ServeMetrics
from pipeline.serving.store import LoadedModel


class Recorder:
    """A classifier that records each batch it is given."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def predict(self, texts: list[str]) -> list[str]:
        self.log.append(list(texts))
        return [t.upper() for t in texts]


def test_requests_waiting_together_run_as_one_batch_in_queue_order() -> None:
    log: list[Any] = []
    model = loaded(Recorder(log))
    batcher = Batcher(max_batch_texts=3)
    # queued before the thread starts, so the thread sees them all waiting at once
    first, a, b = batcher.submit(model, ["first"]), batcher.submit(model, ["a", "b"]), batcher.submit(model, ["c"])
    batcher.start()
    try:
        assert first.result(10) == ["FIRST"] and a.result(10) == ["A", "B"] and b.result(10) == ["C"]
    finally:
        batcher.stop()
    assert log == [["first", "a", "b"], ["c"]]  # max_batch_texts closes the first batch


class Gate:
    """A classifier that holds each batch until released, so a test can look at the batcher while it computes."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []

    def predict(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.release.wait(10), "the test never released the batch"
        return [f"{t}!" for t in texts]


def loaded(classifier: Any) -> LoadedModel:
    return LoadedModel("m", "1", classifier, "torch-fp32", None, {}, None, 0.0, 0.0)


def sample(metrics: ServeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_busy_while_a_batch_runs_idle_after_and_pending_counts_the_queue() -> None:
    gate = Gate()
    batcher = Batcher(max_batch_texts=1)
    assert not batcher.busy() and batcher.wait_idle(0) and batcher.pending() == 0
    first = batcher.submit(loaded(gate), ["a"])
    second = batcher.submit(loaded(gate), ["b"])
    assert batcher.busy() and not batcher.wait_idle(0) and batcher.pending() == 2 and batcher.waiting_texts == 2
    batcher.start()
    try:
        assert gate.entered.wait(10)
        assert batcher.running and batcher.busy() and not batcher.wait_idle(0.05)
        gate.release.set()
        assert (first.result(10), second.result(10)) == (["a!"], ["b!"])
        assert batcher.wait_idle(10) and not batcher.busy() and batcher.waiting_texts == 0
    finally:
        batcher.stop()
    assert not batcher.alive() and gate.calls == [["a"], ["b"]]


def test_predict_awaits_its_answer_and_refuses_beyond_the_queue() -> None:
    gate = Gate()
    model = loaded(gate)
    batcher = Batcher(max_batch_texts=8, max_queue=3)

    async def scenario() -> None:
        batcher.submit(model, ["x", "y"])  # waiting: 2 of 3
        answer = asyncio.ensure_future(batcher.predict(model, ["a"]))  # 3 of 3: still taken
        await asyncio.sleep(0)
        assert batcher.in_flight == 1 and batcher.waiting_texts == 3
        with pytest.raises(QueueFull, match="3 texts are waiting"):
            await batcher.predict(model, ["b"])
        assert batcher.in_flight == 1  # the refused request left no count behind
        batcher.start()
        gate.release.set()
        assert await answer == ["a!"]
        assert batcher.in_flight == 0 and batcher.wait_idle(10)

    try:
        asyncio.run(scenario())
    finally:
        batcher.stop()
    assert gate.calls == [["x", "y", "a"]]


def test_each_model_gets_its_own_forward_pass_and_cancelled_requests_are_skipped() -> None:
    one, two = Recorder([]), Recorder([])
    first, second = loaded(one), loaded(two)
    batcher = Batcher(max_batch_texts=16)
    a = batcher.submit(first, ["a"])
    gone = batcher.submit(first, ["gone"])
    b = batcher.submit(second, ["b"])
    c = batcher.submit(first, ["c"])
    assert gone.cancel()
    batcher.start()
    try:
        assert (a.result(10), b.result(10), c.result(10)) == (["A"], ["B"], ["C"])
    finally:
        batcher.stop()
    assert one.log == [["a", "c"]] and two.log == [["b"]]


def test_stop_arriving_during_a_batch_ends_the_thread_after_the_queue_before_it() -> None:
    batcher = Batcher(max_batch_texts=16)
    recorder = Recorder([])
    before = batcher.submit(loaded(recorder), ["a"])
    batcher._queue.put(None)  # what stop() queues, here already waiting behind "a"
    after = batcher.submit(loaded(recorder), ["b"])
    batcher.start()
    batcher._thread.join(10)
    assert not batcher.alive() and before.result(0) == ["A"] and after.result(0) == ["B"]
    assert recorder.log == [["a"], ["b"]]  # the stop closed the first batch


def test_metrics_count_texts_and_requests_per_batch_and_inference_errors() -> None:
    metrics = ServeMetrics(state=None, paths=set())
    batcher = Batcher(max_batch_texts=16, metrics=metrics)
    good = batcher.submit(loaded(Recorder([])), ["a", "b"])
    also = batcher.submit(loaded(Recorder([])), ["c"])
    batcher.start()
    try:
        good.result(10), also.result(10)
        failing = batcher.submit(SimpleNamespace(classifier=SimpleNamespace(predict=lambda texts: 1 / 0)), ["x"])
        with pytest.raises(ZeroDivisionError):
            failing.result(10)
    finally:
        batcher.stop()
    assert sample(metrics, "emotion_batch_texts_sum") == 4 and sample(metrics, "emotion_batch_texts_count") == 2
    assert sample(metrics, "emotion_batch_requests_sum") == 3
    assert sample(metrics, "emotion_errors_total", kind="inference") == 1


def test_one_waiting_text_is_busy_and_answers_are_sliced_per_request() -> None:
    recorder = Recorder([])
    model = loaded(recorder)
    batcher = Batcher(max_batch_texts=16)
    first = batcher.submit(model, ["a", "b"])
    assert batcher.busy()  # one request of two texts, and below:
    second, third = batcher.submit(model, ["c"]), batcher.submit(model, ["d", "e"])
    lone = Batcher(max_batch_texts=16)
    lone.submit(model, ["x"])
    assert lone.busy() and not lone.wait_idle(0)  # a single waiting text is work too
    batcher.start()
    try:
        assert (first.result(10), second.result(10), third.result(10)) == (["A", "B"], ["C"], ["D", "E"])
    finally:
        batcher.stop()
    assert recorder.log == [["a", "b", "c", "d", "e"]]


def test_two_requests_one_poisoned_are_retried_alone_and_the_retry_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.unit.test_batcher_limits import Classifier

    model: Any = SimpleNamespace(classifier=Classifier(poison="bad"))
    batcher = Batcher(max_batch_texts=16)
    good, bad = batcher.submit(model, ["fine"]), batcher.submit(model, ["bad"])
    with caplog.at_level("WARNING", logger="pipeline.serving.batcher"):
        batcher.start()
        try:
            assert good.result(10) == ["label of fine"]
            with pytest.raises(TypeError):
                bad.result(10)
        finally:
            batcher.stop()
    assert "a batch of 2 requests failed (cannot tokenize this); retrying them one by one" in caplog.text


def test_answers_the_model_cannot_hand_back_fail_their_requests_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken: Any = SimpleNamespace(classifier=SimpleNamespace(predict=lambda texts: None))  # nothing to slice
    batcher = Batcher(max_batch_texts=16)
    lost = batcher.submit(broken, ["a"])
    with caplog.at_level("ERROR", logger="pipeline.serving.batcher"):
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="inference failed"):
                lost.result(10)
            assert batcher.submit(loaded(Recorder([])), ["still"]).result(10) == ["STILL"]
        finally:
            batcher.stop()
    assert "inference batch failed" in caplog.text
