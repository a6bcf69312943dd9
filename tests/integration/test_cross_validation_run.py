"""`emotion run --set evaluate.cv_folds=3` on data without its own split: three fold child runs, mean and std on
the parent, cv.json, then the final model evaluated, gated and registered as usual."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.ingest import sample_data_dir
from pipeline.registry import connection
from tests.conftest import BIN, PARAMS, cli_env, tiny_overrides

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"


def unsplit_sample(path: Path) -> Path:
    """The shipped sample as one CSV of text and label, with no split column: ingest draws the split."""
    parts = [
        pd.read_csv(sample_data_dir() / f"{split}.txt", sep=";", names=["text", "label"], quoting=3)
        for split in ("train", "validation", "test")
    ]
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_run_cross_validates_then_registers_the_final_model(
    project: Path, tiny_model_dir: Path, prefect_api: str
) -> None:
    source = unsplit_sample(project / "emotions.csv")
    overrides = tiny_overrides(project, tiny_model_dir, f"data.source={source}", "train.max_steps=6")
    args = [str(BIN / "emotion"), "run", "--config", str(PARAMS), "--set", "evaluate.cv_folds=3"]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=cli_env(prefect_api), timeout=900)
    output = done.stderr + done.stdout
    assert done.returncode == 0, output[-3000:]
    cv_lines = [line for line in output.splitlines() if line.startswith("cross-val ")]
    assert len(cv_lines) == 1 and " ± " in cv_lines[0] and "over 3 folds" in cv_lines[0], output[-3000:]

    cfg = load_config(PARAMS, overrides, environ={})
    client = connection.client(cfg.registry)
    parent_id = next(line.split()[-1] for line in output.splitlines() if line.startswith("mlflow    run "))
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(run.data.tags["mlflow.runName"] for run in children) == ["cv-fold-1", "cv-fold-2", "cv-fold-3"]
    assert {run.info.status for run in children} == {"FINISHED"}
    fold_f1 = [run.data.metrics["macro_f1"] for run in children]
    held_out = sum(int(run.data.params["cv.test_rows"]) for run in children)

    parent = client.get_run(parent_id)
    assert parent.data.metrics["cv_macro_f1_mean"] == pytest.approx(sum(fold_f1) / 3, abs=1e-6)
    assert parent.data.metrics["cv_macro_f1_std"] == pytest.approx(pd.Series(fold_f1).std(), abs=1e-6)
    assert "cv_accuracy_std" in parent.data.metrics and "test_macro_f1" in parent.data.metrics
    saved = json.loads((project / "artifacts" / "latest" / "cv.json").read_text())
    assert saved["folds"] == 3 and sum(saved["held_out_rows"]) == held_out
    test_rows = len(pd.read_json(project / "artifacts" / "latest" / "prepared" / "test.jsonl", lines=True))
    pool_rows = sum(
        len(pd.read_json(project / "artifacts" / "latest" / "prepared" / f"{s}.jsonl", lines=True))
        for s in ("train", "validation")
    )
    assert held_out == pool_rows and test_rows > 0  # the folds cover train + validation, never test
    logged = {a.path for a in client.list_artifacts(parent_id, "cv")}
    assert logged == {"cv/cv.json", "cv/cv_folds.csv", "cv/cv_folds.md"}

    version = client.get_model_version(MODEL, "1")
    assert version.run_id == parent_id
    assert "### Cross-validation" in version.description and "over 3 folds" in version.description
    fold_work = project / "artifacts" / "latest" / "cv"
    assert not fold_work.exists() or not any(fold_work.iterdir())
