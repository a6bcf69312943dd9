"""A background thread that runs one step every few seconds until stopped: the champion refresh and the reload
watcher of `emotion serve` share it."""

from __future__ import annotations

import threading
from collections.abc import Callable


def start_periodic(name: str, seconds: float, step: Callable[[], object]) -> Callable[[], None]:
    """Run ``step`` every ``seconds`` on a daemon thread named ``name``; returns how to stop it (and wait for it)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            step()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()

    def stop_and_join() -> None:
        stop.set()
        thread.join(timeout=5)

    return stop_and_join
