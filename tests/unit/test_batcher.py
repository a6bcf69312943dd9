"""pipeline.serving.batcher: a call (an explanation) runs alone between prediction batches, in queue order."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import PipelineError
from pipeline.serving.batcher import Batcher, _Job
from pipeline.serving.store import LoadedModel


class Recorder:
    """A classifier that records each batch it is given."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def predict(self, texts: list[str]) -> list[str]:
        self.log.append(list(texts))
        return [t.upper() for t in texts]


def test_a_call_runs_alone_between_batches_in_queue_order() -> None:
    log: list[Any] = []
    model = LoadedModel("m", "1", Recorder(log), "torch-fp32", None, {}, None, 0.0, 0.0)

    def explain() -> str:
        log.append("call")
        return "explained"

    def fails() -> None:
        raise PipelineError("unknown label")

    batcher = Batcher(max_batch_texts=100)
    # queued before the thread starts, so the thread sees them all waiting at once
    first, a = batcher.submit(model, ["first"]), batcher.submit(model, ["a"])
    call, failing = _Job(model, [], call=explain), _Job(model, [], call=fails)
    batcher._queue.put(call)
    batcher._queue.put(failing)
    b = batcher.submit(model, ["b"])
    batcher.start()
    try:
        assert first.result(10) == ["FIRST"] and a.result(10) == ["A"] and b.result(10) == ["B"]
        assert call.future.result(10) == "explained"
        with pytest.raises(PipelineError, match="unknown label"):
            failing.future.result(10)
    finally:
        batcher.stop()
    assert log == [["first", "a"], "call", ["b"]]
