"""The server's heap after start-up and after a champion swap (``store.settle_heap``): frozen, so full collector
passes do not stall requests, yet what a swap let go of is still collected."""

from __future__ import annotations

import gc
import weakref

from pipeline.serving.store import settle_heap


class Model:
    """Stands in for a loaded model: objects in a reference cycle, as module trees are."""

    def __init__(self) -> None:
        self.me = self


def test_settle_heap_collects_a_frozen_cycle_then_freezes_what_is_alive() -> None:
    kept = Model()
    replaced = Model()
    gone = weakref.ref(replaced)
    try:
        gc.freeze()  # both loaded at start-up and frozen
        del replaced  # the swap lets the old model go
        gc.collect()
        assert gone() is not None  # a frozen cycle outlives a full pass: why a swap has to settle the heap
        settle_heap()
        assert gone() is None
        assert gc.get_freeze_count() > 0 and kept.me is kept
    finally:
        gc.unfreeze()
