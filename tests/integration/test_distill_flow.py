"""Distillation as a flow: `emotion run --recipe emotion-distill` trains the teachers as tasks (MLflow child runs),
then the student, which is evaluated, gated and registered. Tiny BERT, sample data, real DVC repo and MLflow store."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.registry import connection
from tests.conftest import BIN, PARAMS, cli_env, tiny_overrides

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"


def children(cfg, run_id: str) -> list:
    client = connection.client(cfg.registry)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    found = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return sorted(found, key=lambda run: run.data.tags["mlflow.runName"])


def test_emotion_run_distill_recipe_trains_teachers_then_registers_the_student(
    project: Path, tiny_model_dir: Path, prefect_api: str
) -> None:
    from pipeline.config import load_config

    overrides = tiny_overrides(
        project,
        tiny_model_dir,
        "data.source=sample",
        "train.max_steps=4",
        "train.distill.teacher_seeds=[1, 2]",
        "train.distill.parallelism=2",
    )
    args = [str(BIN / "emotion"), "run", "--json", "--config", str(PARAMS), "--recipe", "emotion-distill"]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=cli_env(prefect_api), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert re.search(r"^teachers +seed1 val macro-F1 [0-9.]+, seed2 val macro-F1", done.stderr, re.M), done.stderr

    cfg = load_config(PARAMS, overrides, environ={}, recipes=["emotion-distill"])
    run_dir = project / "artifacts" / "runs" / summary["run_id"]
    folders = [run_dir / "teachers" / name for name in ("seed1", "seed2")]
    assert all((folder / "config.json").is_file() for folder in folders)
    teacher_runs = children(cfg, summary["run_id"])
    assert [r.data.tags["mlflow.runName"] for r in teacher_runs] == ["teacher-seed1", "teacher-seed2"]
    assert [r.info.status for r in teacher_runs] == ["FINISHED", "FINISHED"]
    assert [r.data.params["train.seed"] for r in teacher_runs] == ["1", "2"]
    assert [r.data.params["train.teachers"] for r in teacher_runs] == ["[]", "[]"]
    assert all("selected_val_macro_f1" in r.data.metrics for r in teacher_runs)
    assert [t["run_id"] for t in summary["teachers"]] == [r.info.run_id for r in teacher_runs]

    client = connection.client(cfg.registry)
    version = client.get_model_version(MODEL, summary["version"])
    assert version.run_id == summary["run_id"]  # the student's run, not a teacher's
    student = client.get_run(version.run_id)
    assert student.data.params["train.seed"] == "45"
    assert float(student.data.params["train.distill_weight"]) > 0
    assert json.loads(student.data.tags["distill.teacher_dirs"]) == [str(folder) for folder in folders]
    assert student.data.tags["gate"] in ("passed", "failed") and "passed" in summary["gate"]
    assert (run_dir / "gate.json").is_file()


@pytest.mark.usefixtures("prefect_harness")
def test_a_failing_teacher_fails_the_run_by_name_and_registers_nothing(tiny_config) -> None:
    import torch

    from flows.training import training_flow

    if torch.cuda.is_available():
        pytest.skip("the failure is a teacher asking for a GPU on a machine without one")
    cfg = tiny_config(
        "train.seed=5",
        "train.max_steps=2",
        "train.distill.teacher_seeds=[7]",
        "train.distill.teacher_overrides={device: cuda}",
    )
    with pytest.raises(PipelineError, match="teacher seed7 failed"):
        training_flow(cfg)

    client = connection.client(cfg.registry)
    assert client.search_model_versions(f"name='{MODEL}'") == []
    parent = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id])
    parent = [run for run in parent if "mlflow.parentRunId" not in run.data.tags]
    assert [run.info.status for run in parent] == ["FAILED"]
    assert [run.info.status for run in children(cfg, parent[0].info.run_id)] == ["FAILED"]
