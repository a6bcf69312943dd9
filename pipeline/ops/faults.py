"""Fault injection for the reliability tests: named points where a test kills the process with SIGKILL.

``fault_point(name)`` does nothing in normal use. When the environment variable ``EMOTION_FAULT_POINT`` names
this point, it writes the marker file ``EMOTION_FAULT_MARKER`` (so the test knows the process stands exactly
there) and sleeps until it is killed. tests/integration/test_faults.py kills the training flow and the server at
each point and checks that nothing was lost; docs/reliability.md has the results.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINT_VARIABLE = "EMOTION_FAULT_POINT"
MARKER_VARIABLE = "EMOTION_FAULT_MARKER"
HOLD_SECONDS = 600.0  # how long a process waits at its fault point for the kill (a hang guard, not a timing)

# Where the training flow and the server can be stopped, in the order a run reaches them.
POINTS = (
    "ingest.committed",  # data/ swapped in, data.dvc written and pushed
    "train.checkpointed",  # the first evaluation's checkpoint is saved
    "register.logged",  # the model is logged on the run, no registered version yet
    "register.created",  # the version exists, the challenger alias not yet moved
    "promote.champion_moved",  # champion alias moved; version tags and the history entry not yet written
    "serve.reload_loaded",  # hot reload: the new champion is loaded, not yet swapped in
)


def fault_point(name: str) -> None:
    """Stop here (marker written, then sleep) when ``EMOTION_FAULT_POINT`` equals ``name``; otherwise no-op."""
    if os.environ.get(POINT_VARIABLE) != name:
        return
    marker = os.environ.get(MARKER_VARIABLE)
    if marker:
        Path(marker).write_text(f"{name} {os.getpid()}\n")
    time.sleep(HOLD_SECONDS)
