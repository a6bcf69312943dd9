"""pipeline.console: what reaches the console and what only the run log gets."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import console


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """console.setup changes the root logger; give the next test the logging it had.

    An earlier in-process flow test leaves Prefect's handlers on the root, ``pipeline`` and ``prefect`` loggers
    (a fresh ``emotion`` process never has them when console.setup runs), so they are set aside for these tests.
    """
    logging.captureWarnings(False)  # an earlier in-process `emotion` call may have left it on (then a no-op here)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [h for h in handlers if not type(h).__module__.startswith("prefect")]
    named = {name: logging.getLogger(name) for name in ("pipeline", "prefect", "prefect.task_runs")}
    saved = {name: (lg.handlers[:], lg.propagate) for name, lg in named.items()}
    for lg in named.values():
        lg.handlers[:], lg.propagate = [], True
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    for name, lg in named.items():
        lg.handlers[:], lg.propagate = saved[name]
    logging.captureWarnings(False)


def emit_some() -> None:
    console.stage("train", "12 steps", 3.14)
    logging.getLogger("pipeline.data.validate").warning("data check warning: duplicates")
    logging.getLogger("pipeline.data.validate").error("data validation failed")
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("somelibrary.store").info("Creating initial database tables...")  # any library's INFO record
    logging.captureWarnings(True)
    warnings.warn("Add type hints", UserWarning, stacklevel=1)


def test_run_log_takes_everything_and_the_console_only_stage_lines_and_our_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = console.new_run_log(tmp_path / "logs")
    console.setup(verbose=False, log_file=log_file)
    emit_some()

    assert capsys.readouterr().err.splitlines() == [
        "train        12 steps (3.1 s)",
        "warning: data check warning: duplicates",
    ]
    text = log_file.read_text()
    for line in ("pipeline.console: train", "data validation failed", "Finished in state", "database tables", "hints"):
        assert line in text, line
    assert console.run_log() == log_file


def test_verbose_shows_everything_on_the_console_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = console.new_run_log(tmp_path / "logs")
    console.setup(verbose=True, log_file=log_file)
    emit_some()

    err = capsys.readouterr().err
    for line in ("pipeline.console: train", "data validation failed", "Finished in state", "database tables", "hints"):
        assert line in err and line in log_file.read_text(), line


def test_run_logs_started_in_the_same_second_get_their_own_files(tmp_path: Path) -> None:
    paths = {console.new_run_log(tmp_path) for _ in range(3)}
    assert len(paths) == 3 and all(p.name.startswith("run-") and p.suffix == ".log" for p in paths)
