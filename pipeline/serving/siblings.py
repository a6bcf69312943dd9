"""What one server process shares with its siblings when ``serve.workers`` > 1 (``processes.run_workers``).

The supervisor gives every worker the same private folder (``WorkerContext.shared_dir``), deleted when it stops:

- ``metrics/``: prometheus-client's multiprocess files, so ``GET /metrics`` from any worker adds up the counters
  and histograms of all of them;
- ``reload``: the reload generation. ``POST /reload`` reaches one worker; it checks the registry, then writes a
  new token here, and every worker's watcher thread (a file read every ``WATCH_SECONDS``) runs the same champion
  check and writes the token it has acted on to ``seen-<index>``. The worker that got the request answers once all
  have done so (or after ``serve.request_timeout_seconds``), so a client that reloads and then predicts gets the
  new champion from whichever worker answers.

Each worker's own periodic check (``serve.refresh_seconds``) goes on as in a single process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.serving.periodic import start_periodic

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2  # how often a worker reads the reload generation: a stat and a read of a few bytes


@dataclass(frozen=True)
class WorkerContext:
    """One worker's place among its siblings: its index, how many there are, and the folder they share."""

    index: int
    count: int
    shared_dir: Path

    @property
    def metrics_dir(self) -> Path:
        return self.shared_dir / "metrics"

    @property
    def reload_file(self) -> Path:
        return self.shared_dir / "reload"

    def seen_file(self, index: int) -> Path:
        return self.shared_dir / f"seen-{index}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a token."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def announce_reload(worker: WorkerContext) -> str:
    """A new reload generation, after this worker's own check; it counts as seen by this worker."""
    token = f"{worker.index}-{time.time_ns()}"
    _write(worker.reload_file, token)
    _write(worker.seen_file(worker.index), token)
    return token


def reloaded_everywhere(worker: WorkerContext, token: str) -> int:
    """How many workers have acted on ``token`` (this one included)."""
    return sum(_read(worker.seen_file(i)) == token for i in range(worker.count))


async def reload_siblings(worker: WorkerContext, timeout: float) -> int:
    """Announce a reload and wait until every worker has checked the registry (``timeout`` seconds at most);
    how many have."""
    token = await asyncio.to_thread(announce_reload, worker)
    deadline = time.monotonic() + timeout
    while (done := await asyncio.to_thread(reloaded_everywhere, worker, token)) < worker.count:
        if time.monotonic() >= deadline:
            log.warning("%d of %d workers checked for a new champion within %gs", done, worker.count, timeout)
            break
        await asyncio.sleep(WATCH_SECONDS / 2)
    return done


def start_reload_watcher(worker: WorkerContext, check: Callable[[], object]) -> Callable[[], None]:
    """A thread that runs ``check`` (the champion check) whenever a sibling announces a reload; returns how to stop
    it. Generations announced before it started are not acted on: the worker has just loaded the champion."""
    seen = _read(worker.reload_file)

    def step() -> None:
        nonlocal seen
        token = _read(worker.reload_file)
        if token is None or token == seen:
            return
        seen = token
        if _read(worker.seen_file(worker.index)) == token:  # this worker announced it, after its own check
            return
        try:
            check()
        except Exception:  # the check records its own failures; the watcher must go on
            log.exception("champion check after a sibling's reload failed")
        _write(worker.seen_file(worker.index), token)

    return start_periodic("emotion-reload-watch", WATCH_SECONDS, step)
