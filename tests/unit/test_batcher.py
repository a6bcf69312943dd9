"""pipeline.serving.batcher: the texts of requests waiting together run as one batch, in queue order."""

from __future__ import annotations

from typing import Any

from pipeline.serving.batcher import Batcher
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
    model = LoadedModel("m", "1", Recorder(log), "torch-fp32", None, {}, None, 0.0, 0.0)
    batcher = Batcher(max_batch_texts=3)
    # queued before the thread starts, so the thread sees them all waiting at once
    first, a, b = batcher.submit(model, ["first"]), batcher.submit(model, ["a", "b"]), batcher.submit(model, ["c"])
    batcher.start()
    try:
        assert first.result(10) == ["FIRST"] and a.result(10) == ["A", "B"] and b.result(10) == ["C"]
    finally:
        batcher.stop()
    assert log == [["first", "a", "b"], ["c"]]  # max_batch_texts closes the first batch
