"""`emotion run` on a console: one line per stage and the summary; the libraries' chatter only in the run log."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.registry import connection
from tests.conftest import BIN, PARAMS, tiny_overrides

pytestmark = pytest.mark.slow

STAGES = ("ingest", "validate", "clean/encode", "train", "evaluate", "behaviour", "gate", "register")


@pytest.mark.fresh_registry  # a user's first run: the store is made by the run
def test_run_prints_stage_lines_and_summary_and_logs_the_rest(project: Path, tiny_model_dir: Path) -> None:
    overrides = tiny_overrides(project, tiny_model_dir)
    args = [str(BIN / "emotion"), "run", "--config", str(PARAMS)]
    for item in overrides:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # its own temporary server
    done = subprocess.run(args, cwd=project, capture_output=True, env=env, timeout=600)  # bytes: a bar's \r stays
    output = (done.stderr + done.stdout).decode()
    assert done.returncode == 0, output[-3000:]
    lines = output.rstrip("\n").split("\n")  # as `wc -l` counts them

    assert len(lines) < 60, "\n".join(lines)
    stage_lines = Counter(line[:13] for line in lines)  # "train        30 steps ..." (the summary says "gate      ")
    assert {name: stage_lines[f"{name:<12} "] for name in STAGES} == dict.fromkeys(STAGES, 1), "\n".join(lines)
    reasons = [line.strip() for line in lines if "(needs " in line]
    assert reasons and len(reasons) == len(set(reasons)), "\n".join(lines)
    for chatter in ("Finished in state", "git add", "LOAD REPORT", "mlflow.store", "Warning"):
        assert chatter not in output, chatter

    assert lines[-1].startswith("log ")
    shown = Path(lines[-1].split(maxsplit=1)[1])
    assert not shown.is_absolute(), "paths below the working directory are shown relative to it"
    log_file = project / shown  # the run's working directory was the project
    assert log_file.parent == project / "artifacts" / "logs" and log_file.is_file()
    folder = next(line for line in lines if line.startswith("folder "))
    assert (project / folder.split()[1]).parent == project / "artifacts" / "runs"
    text = log_file.read_text()
    for chatter in ("prefect.flow_runs: Finished in state Completed()", "git add", "LOAD REPORT", "mlflow.store"):
        assert chatter in text, chatter
    assert "pipeline.console: train " in text  # the stage lines too, among the details

    run_id = next(line.split()[-1] for line in lines if line.startswith("mlflow    run "))
    cfg = load_config(PARAMS, overrides, environ={})
    logged = connection.client(cfg.registry).list_artifacts(run_id, "logs")
    assert [Path(a.path).name for a in logged] == [log_file.name]
