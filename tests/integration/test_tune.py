"""`emotion tune` end to end: a 3-trial study of the tiny model in sqlite, nested MLflow runs, and a recipe that
`emotion run --recipe` takes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.registry import tracking
from tests.conftest import BIN, PARAMS, tiny_overrides

pytestmark = pytest.mark.slow

SMALL_SPACE = [  # merged over params.yaml's space: short trials, and several evaluations each so pruning can act
    "tune.space.epochs={type: int, low: 1, high: 2}",
    "tune.space.learning_rate={type: float, low: 1.0e-4, high: 3.0e-3, log: true}",
    "train.eval_every=10",
    "tune.startup_trials=1",
    "tune.warmup_evaluations=0",
]


def emotion(project: Path, command: str, overrides: list[str], *extra: str) -> str:
    started = time.perf_counter()
    args = [str(BIN / "emotion"), command, "--config", str(PARAMS), *extra]
    for item in overrides:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPTUNA_"))}
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"emotion {command}: {time.perf_counter() - started:.0f}s")
    return done.stdout


def test_tune_runs_a_study_and_writes_a_recipe_that_run_accepts(project: Path, tiny_model_dir: Path) -> None:
    import optuna

    searched = ("train.learning_rate=", "train.batch_size=", "train.epochs=")  # --set would win over the recipe
    overrides = [item for item in tiny_overrides(project, tiny_model_dir) if not item.startswith(searched)]
    emotion(project, "ingest", overrides)
    output = emotion(project, "tune", overrides + SMALL_SPACE, "--trials", "3")

    trial_lines = [line for line in output.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3, output
    assert "== emotion tune ==" in output and "best      trial " in output, output

    storage = f"sqlite:///{project}/artifacts/tune/optuna.db"
    study = optuna.load_study(study_name="emotion-tune", storage=storage)
    assert len(study.trials) == 3
    best = study.best_trial
    assert set(best.params) == {
        "learning_rate",
        "batch_size",
        "epochs",
        "layer_lr_decay",
        "class_weights",
        "label_smoothing",
        "warmup_fraction",
    }

    cfg = load_config(PARAMS, overrides, environ={})
    client = tracking.client(cfg)
    experiment = client.get_experiment_by_name("emotion-tuning")
    parent_id = next(line.split()[2] for line in output.splitlines() if line.startswith("mlflow    run "))
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(int(run.data.tags["tune.trial"]) for run in children) == [0, 1, 2]
    states = {run.data.tags["tune.state"] for run in children}
    assert states <= {"complete", "pruned"} and "complete" in states
    best_run = next(run for run in children if run.data.tags["tune.trial"] == str(best.number))
    assert best_run.data.metrics["selected_val_macro_f1"] == pytest.approx(best.value)
    assert client.get_run(parent_id).data.tags["tune.best_trial"] == str(best.number)

    recipe = project / "recipes" / "tuned.yaml"
    assert recipe.is_file() and f"trial {best.number}" in recipe.read_text()
    tuned = load_config(PARAMS, overrides, environ={}, recipes=[str(recipe)])
    assert {name: getattr(tuned.train, name) for name in best.params} == best.params

    summary = emotion(project, "run", overrides + ["train.max_steps=3"], "--recipe", str(recipe))
    assert "== emotion pipeline run ==" in summary and "training  3 steps" in summary, summary
