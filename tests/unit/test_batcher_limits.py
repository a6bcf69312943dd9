"""The inference thread's guarantees without a server: a failing batch is retried request by request, and the
bounded queue refuses instead of growing."""

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.serving.batcher import Batcher, QueueFull


class Classifier:
    """Answers each text with itself; refuses any batch holding ``poison`` (like a tokenizer TypeError)."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.calls: list[list[str]] = []

    def predict(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if self.poison in texts:
            raise TypeError("cannot tokenize this")
        return [f"label of {t}" for t in texts]


def test_a_failing_batch_is_retried_per_request_so_only_the_culprit_fails() -> None:
    classifier = Classifier(poison="bad")
    model: Any = SimpleNamespace(classifier=classifier)
    batcher = Batcher(max_batch_texts=16)
    good, bad, other = (batcher.submit(model, texts) for texts in (["a", "b"], ["bad"], ["c"]))
    batcher.start()  # all three are queued, so the first pass batches them together
    try:
        assert good.result(timeout=10) == ["label of a", "label of b"]
        assert other.result(timeout=10) == ["label of c"]
        with pytest.raises(TypeError, match="cannot tokenize"):
            bad.result(timeout=10)
    finally:
        batcher.stop()
    assert classifier.calls == [["a", "b", "bad", "c"], ["a", "b"], ["bad"], ["c"]]


def test_the_queue_refuses_requests_beyond_max_queue_waiting_texts() -> None:
    model: Any = SimpleNamespace(classifier=Classifier(poison="-"))
    batcher = Batcher(max_batch_texts=16, max_queue=3)  # not started: everything submitted keeps waiting
    batcher.submit(model, ["a", "b", "c", "d"], bounded=True)  # an empty queue takes any request
    with pytest.raises(QueueFull, match="4 texts are waiting"):
        batcher.submit(model, ["e"], bounded=True)
    batcher.submit(model, ["shadow"])  # unbounded submitters (the shadow thread) are never refused
    assert batcher.waiting_texts == 5
    batcher.start()
    try:
        batcher.submit(model, ["last"]).result(timeout=10)
        assert batcher.waiting_texts == 0
        assert batcher.submit(model, ["f", "g"], bounded=True).result(timeout=10) == ["label of f", "label of g"]
    finally:
        batcher.stop()
