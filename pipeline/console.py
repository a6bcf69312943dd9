"""What a person sees while the pipeline runs: one line per stage, and a per-run log file for everything else.

Stage lines are log records of the ``pipeline.console`` logger, so the CLI, the DVC stages (which run the CLI)
and Prefect (which sends the ``pipeline`` loggers to its API) all get them. ``emotion run`` keeps the console to
those lines and the project's own warnings; the libraries' chatter (Prefect, MLflow, transformers, DVC, Great
Expectations, Python warnings) goes to ``artifacts/logs/run-<timestamp>.log``, or to the console too with ``-v``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.redact import redact

STAGE_LOGGER = "pipeline.console"
OUR_LOGGERS = ("pipeline", "flows")  # their warnings are meant for people (errors are raised, and the CLI prints them)
DETAILED = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

stage_log = logging.getLogger(STAGE_LOGGER)
stage_log.setLevel(logging.INFO)  # shown even where the root logger only passes warnings (a Prefect worker)


def since(started: float) -> float:
    """Seconds since a ``time.perf_counter()`` reading: the figure a stage line shows."""
    return time.perf_counter() - started


def stage(name: str, detail: str, seconds: float | None = None) -> None:
    """One line saying a stage finished and what it did, e.g. ``train  12 steps, 3.1 s``."""
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    stage_log.info("%-12s %s%s", name, detail, took)


class ConsoleHandler(logging.StreamHandler):
    """stderr; with a run log, only stage lines and the project's warnings (the file has the rest)."""

    def __init__(self, everything: bool) -> None:
        super().__init__()
        self.everything = everything
        self.setFormatter(DETAILED)

    @property
    def stream(self) -> Any:
        """The current sys.stderr, as logging's last-resort handler does (a captured or replaced one included)."""
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        if self.everything:
            return True
        if record.name == STAGE_LOGGER:
            return True
        return record.levelno == logging.WARNING and record.name.split(".")[0] in OUR_LOGGERS

    def format(self, record: logging.LogRecord) -> str:
        if self.everything:
            return redact(super().format(record))
        if record.name == STAGE_LOGGER:
            return redact(record.getMessage())
        return redact(f"warning: {record.getMessage()}")


class RunLogHandler(logging.FileHandler):
    """The per-run log file (a class of its own so the flow can find it and attach it to the MLflow run).

    ``delay``: the file and its folder are created by the first record, so a command refused by its own checks
    (which raise, not log) leaves nothing behind.
    """

    def __init__(self, path: Path, delay: bool = False) -> None:
        super().__init__(path, encoding="utf-8", delay=delay)
        self.setFormatter(DETAILED)

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # the file is attached to the MLflow run: no passwords in URIs


def setup(verbose: bool, log_file: Path | None = None, delay: bool = False) -> None:
    """Route logging: everything to the console, or (with ``log_file`` and not verbose) stage lines only.

    ``delay`` writes ``log_file`` only once a record arrives (``RunLogHandler``).

    Installed before Prefect is imported: Prefect then leaves the root logger's handlers alone.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, (ConsoleHandler, RunLogHandler))]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(ConsoleHandler(everything=verbose or log_file is None))
    if log_file is not None:
        root.addHandler(RunLogHandler(log_file, delay))
    for noisy in ("httpx", "great_expectations", "sqlalchemy", "alembic", "huey"):  # API calls, SQL, registrations
        logging.getLogger(noisy).setLevel(logging.WARNING)


def new_run_log(folder: Path) -> Path:
    """A fresh ``run-<timestamp>.log`` in ``folder`` (``-2``, ``-3`` ... when a run started the same second)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = "run-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = folder / (stem + (f"-{n}" if n > 1 else "") + ".log")
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free log file name for {stem} in {folder}")


def later_log(folder: Path, prefix: str) -> Path:
    """A log file name in ``folder`` for ``setup(..., delay=True)``: nothing is created now, so the process id
    (not a probe of free names, as ``new_run_log`` does) keeps two commands started in the same second apart."""
    return folder / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def libraries_to_log() -> None:
    """Send the libraries' own console output through logging (so into the run log) and drop their progress bars.

    MLflow and transformers install their own stderr handlers; Python warnings print themselves. DVC is handled
    where it runs (``pipeline.registry.versioning``). Call before the libraries are imported, except transformers.
    """
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' loading and saving bars too
    logging.captureWarnings(True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def run_log() -> Path | None:
    """The per-run log file this process writes, if any (a delayed one once it has been written)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RunLogHandler) and Path(handler.baseFilename).exists():
            return Path(handler.baseFilename)
    return None


def attach_run_log(mlflow_client: Any, run_id: str) -> None:
    """Log the per-run log file (as written so far) to the MLflow run under ``logs/``; best effort."""
    path = run_log()
    if path is None:
        return
    try:
        mlflow_client.log_artifact(run_id, str(path), "logs")
    except Exception as exc:  # the run's outcome must not depend on uploading its log
        logging.getLogger(__name__).warning("could not attach %s to MLflow run %s: %s", path, run_id, exc)
