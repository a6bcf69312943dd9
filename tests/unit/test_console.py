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


@pytest.mark.parametrize("backend", ["torch", "onnx-fp32"])
def test_score_keeps_its_job_lines_in_its_log_file_off_the_console(
    tmp_path: Path, tiny_classifier_dir: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    import emotion_cli as cli
    from tests.conftest import PARAMS

    (tmp_path / "in.csv").write_text("text\ni am happy\ni am sad\n")
    args = ["score", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"), "--model", str(tiny_classifier_dir)]
    args += ["--backend", backend, "--config", str(PARAMS), "--set", f"project_dir={tmp_path}"]
    assert cli.main(args) == 0

    out, err = capsys.readouterr()
    assert "pipeline.scoring" not in out + err and " INFO " not in out + err
    assert out.startswith("scored 2 of 2 texts")
    (log_file,) = (tmp_path / "artifacts" / "logs").glob("score-*.log")
    assert f"log       {log_file}" in out
    assert "pipeline.scoring.job: scored 2 texts" in log_file.read_text()


def test_a_refused_score_creates_no_log_file(
    tmp_path: Path, tiny_classifier_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import emotion_cli as cli
    from tests.conftest import PARAMS

    (tmp_path / "in.csv").write_text("text\ni am happy\n")
    args = ["score", str(tmp_path / "in.csv"), "-o", str(tmp_path / "in.csv"), "--model", str(tiny_classifier_dir)]
    assert cli.main([*args, "--config", str(PARAMS), "--set", f"project_dir={tmp_path}"]) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
