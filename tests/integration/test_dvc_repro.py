"""`dvc repro` over the CLI stages in a real temp DVC repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import BIN, PARAMS, REPO


def sh(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_dvc_repro_metrics_and_plots(project: Path, tiny_model_dir: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(REPO / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load(PARAMS.read_text())
    params["model"] |= {"name": str(tiny_model_dir), "max_length": 64}
    params["train"] |= {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3}
    params["mlflow"]["tracking_uri"] = f"sqlite:///{project}/mlflow/mlflow.db"
    (project / "params.yaml").write_text(yaml.safe_dump(params))

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

    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    rerun = sh(project, "dvc", "repro")
    assert "Running stage 'train'" in rerun.stdout and "Stage 'prepare' didn't change" in rerun.stdout
