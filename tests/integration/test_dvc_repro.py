"""`dvc repro` over the CLI stages in a real temp DVC repository."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from tests.conftest import BIN, PARAMS, REPO

pytestmark = pytest.mark.slow


def sh(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def dvc_project(project: Path, tiny_model_dir: Path) -> dict:
    """The repository's stages, code and recipes in a temp DVC repo, with tiny-model params; returns the params."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    for folder in ("pipeline", "emotion_cli", "recipes"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load(PARAMS.read_text())
    params["model"] |= {"name": str(tiny_model_dir), "max_length": 64}
    params["train"] |= {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3}
    params["mlflow"]["tracking_uri"] = f"sqlite:///{project}/mlflow/mlflow.db"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def changed_stages(project: Path) -> set[str]:
    """`dvc status` through DVC's own API: the same check as the command, without a process start per edit."""
    with contextlib.chdir(project), Repo(str(project)) as repo:
        return set(repo.status())


def assert_edits_mark_the_stages_that_run_them(project: Path) -> None:
    """Editing a module (or a recipe) marks exactly the stages that run it as changed, and undoing the edits clears
    them (checked once after all are undone: any edit whose undo left a stage changed would show there)."""
    assert changed_stages(project) == set()
    edits = {
        # train, evaluate and register (which scores the champion) run model code; prepare does not
        "pipeline/model/calibration.py": {"train", "evaluate", "register"},
        "pipeline/data/validate.py": {"prepare"},  # prepare's outputs decide whether train runs again
        "pipeline/evaluation/gate.py": {"evaluate", "register"},
        "pipeline/registry/promotion.py": {"register"},
        "pipeline/config.py": {"prepare", "train", "evaluate", "register"},
        "recipes/emotion.yaml": {"prepare", "train", "evaluate", "register"},  # params.yaml may name it
    }
    for relative, stages in edits.items():
        path = project / relative
        original = path.read_text()
        path.write_text(original + "# an edit\n")
        assert changed_stages(project) == stages, relative
        path.write_text(original)
    assert changed_stages(project) == set()


def test_dvc_repro_metrics_plots_and_code_dependencies(project: Path, tiny_model_dir: Path) -> None:
    params = dvc_project(project, tiny_model_dir)

    sh(project, "emotion", "ingest")
    assert (project / "data.dvc").exists() and "/data" in (project / ".gitignore").read_text()
    first = sh(project, "dvc", "repro")
    assert all(f"Running stage '{s}'" in first.stdout for s in ("prepare", "train", "evaluate"))

    metrics = json.loads(sh(project, "dvc", "metrics", "show", "--json").stdout)
    values = next(iter(metrics.values()))["data"]["artifacts/metrics.json"]["data"]
    assert 0.0 <= values["accuracy"] <= 1.0 and "macro_f1" in values and "f1_surprise" in values
    sh(project, "dvc", "plots", "show")
    assert (project / "dvc_plots" / "index.html").exists()
    assert "didn't change" in sh(project, "dvc", "repro").stdout  # nothing to redo: reproducible stages

    edited = params | {"train": params["train"] | {"epochs": 1}}  # a training parameter: train reruns, prepare not
    (project / "params.yaml").write_text(yaml.safe_dump(edited))
    assert changed_stages(project) == {"train"}  # what `dvc repro` would run first (the rest follow its outputs)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert_edits_mark_the_stages_that_run_them(project)  # the same repo: saves an ingest and a repro
