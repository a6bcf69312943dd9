"""Locks over the steps that must run one at a time, which say who holds them.

Each lock is an OS file lock (``filelock``): a holder that dies, even by ``kill -9``, releases it with its file
descriptors, so a crash never blocks the next run. Beside the lock file, ``<lock>.holder.json`` names the holder
(pid, host, user, command, purpose, since when); a waiter logs it after a few seconds and a timeout's error names
it. A holder file left by a crashed holder is only information: the next holder replaces it.

Used for the project's snapshot swap and ``artifacts/latest`` (``artifacts/locks/project.lock``), for alias moves
in the registry (``mlflow.lock_file``), to set up a new sqlite MLflow store, and to keep a run folder to one process
(``artifacts/runs/<run id>/run.lock``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from filelock import BaseFileLock

log = logging.getLogger(__name__)

HOLDER_SUFFIX = ".holder.json"
REPORT_AFTER_SECONDS = 5.0  # a waiter logs who holds the lock after this long


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written beside it."""

    pid: int
    host: str
    user: str
    command: str
    purpose: str
    since: str  # ISO time, UTC

    @classmethod
    def this_process(cls, purpose: str) -> Holder:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = str(os.getuid())
        return cls(
            os.getpid(),
            socket.gethostname(),
            user,
            " ".join(sys.argv)[:500],
            purpose,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (user {self.user}, {self.purpose}: {self.command}) since {self.since}"

    def is_gone(self) -> bool:
        """Whether the holder is known to have exited (same host, no such process)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def holder_file(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + HOLDER_SUFFIX)


def read_holder(lock_path: Path) -> Holder | None:
    """The holder written beside the lock, or None (never written, removed, or unreadable)."""
    try:
        return Holder(**json.loads(holder_file(lock_path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_holder(lock_path: Path, holder: Holder) -> None:
    target = holder_file(lock_path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(holder), indent=2))
    os.replace(tmp, target)


def _who(lock_path: Path) -> str:
    holder = read_holder(lock_path)
    if holder is None:
        return "another process (it has not said who yet)"
    return holder.describe() + (" [that process has exited: stale holder file]" if holder.is_gone() else "")


def _acquire(lock: BaseFileLock, lock_path: Path, purpose: str, timeout: float) -> None:
    """Wait up to ``timeout`` seconds, saying who holds the lock after ``REPORT_AFTER_SECONDS``."""
    from filelock import Timeout

    started = time.monotonic()
    reported = False
    while True:
        waited = time.monotonic() - started
        step = timeout - waited if reported else min(REPORT_AFTER_SECONDS, timeout) - waited
        try:
            lock.acquire(timeout=max(step, 0.0))
            return
        except Timeout:
            if time.monotonic() - started >= timeout:
                raise PipelineError(
                    f"{purpose}: gave up after {timeout:.0f}s waiting for {lock_path}, held by {_who(lock_path)}. "
                    "Wait for that process to finish (or stop it: its lock is released when it exits), "
                    "or raise lock_timeout"
                ) from None
            if not reported:
                log.warning("%s: waiting for %s, held by %s", purpose, lock_path, _who(lock_path))
                reported = True


@contextlib.contextmanager
def held(lock_path: Path, purpose: str, timeout: float) -> Iterator[Holder]:
    """Hold the lock at ``lock_path`` for ``purpose``, waiting up to ``timeout`` seconds (0: try once).

    Raises PipelineError naming the holder and since when if it stays taken. Not re-entrant: do not nest two
    ``held`` of the same path in one process (the second waits for the first).
    """
    from filelock import FileLock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), thread_local=False)
    _acquire(lock, lock_path, purpose, timeout)
    try:
        stale = read_holder(lock_path)
        if stale is not None:  # released without removing its holder file: it crashed
            log.warning(
                "%s: taking over %s from %s, which exited without releasing", purpose, lock_path, stale.describe()
            )
        me = Holder.this_process(purpose)
        _write_holder(lock_path, me)
        try:
            yield me
        finally:
            holder_file(lock_path).unlink(missing_ok=True)
    finally:
        lock.release()
