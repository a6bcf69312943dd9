"""`emotion tune` end to end: a 3-trial study of the tiny model in sqlite, nested MLflow runs, and a recipe that
`emotion run --recipe` takes."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.registry import connection
from tests.conftest import BIN, PARAMS, cli_env, tiny_overrides

pytestmark = pytest.mark.slow

SMALL_SPACE = [  # merged over params.yaml's space: short trials, and several evaluations each so pruning can act
    "tune.space.epochs={type: int, low: 1, high: 2}",
    "tune.space.learning_rate={type: float, low: 1.0e-4, high: 3.0e-3, log: true}",
    "train.eval_every=10",
    "tune.startup_trials=1",
    "tune.warmup_evaluations=0",
]


def emotion(project: Path, command: str, overrides: list[str], *extra: str, prefect_api: str) -> str:
    started = time.perf_counter()
    args = [str(BIN / "emotion"), command, "--config", str(PARAMS), *extra]
    for item in overrides:
        args += ["--set", item]
    env = {k: v for k, v in cli_env(prefect_api).items() if not k.startswith("OPTUNA_")}
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"emotion {command}: {time.perf_counter() - started:.0f}s")
    return done.stdout


def test_tune_runs_a_study_and_writes_a_recipe_that_run_accepts(
    project: Path, tiny_model_dir: Path, prefect_api: str
) -> None:
    import optuna

    searched = ("train.learning_rate=", "train.batch_size=", "train.epochs=")  # --set would win over the recipe
    overrides = [item for item in tiny_overrides(project, tiny_model_dir) if not item.startswith(searched)]
    emotion(project, "ingest", overrides, prefect_api=prefect_api)
    output = emotion(project, "tune", overrides + SMALL_SPACE, "--trials", "3", prefect_api=prefect_api)

    trial_lines = [line for line in output.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3, output
    assert "== emotion tune ==" in output and "best      trial " in output, output

    storage = f"sqlite:///{project}/artifacts/tune/optuna.db"
    study = optuna.load_study(study_name="emotion-tune", storage=storage)
    assert len(study.trials) == 3
    best = study.best_trial
    space = load_config(PARAMS, overrides + SMALL_SPACE, environ={}).tune.search_space()
    assert set(best.params) == set(space)  # every parameter of the configured space was searched

    cfg = load_config(PARAMS, overrides, environ={})
    client = connection.client(cfg.registry)
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

    summary = emotion(
        project, "run", overrides + ["train.max_steps=3"], "--recipe", str(recipe), prefect_api=prefect_api
    )
    assert "== emotion pipeline run ==" in summary and "training  3 steps" in summary, summary


def small_study(project: Path, tiny_model_dir: Path, *extra: str) -> list[str]:
    searched = ("train.learning_rate=", "train.batch_size=", "train.epochs=")
    return [item for item in tiny_overrides(project, tiny_model_dir) if not item.startswith(searched)] + [
        *SMALL_SPACE,
        *extra,
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_tuning_flow_runs_the_study_as_tasks(project: Path, tiny_model_dir: Path) -> None:
    from flows.tuning import tuning_flow
    from pipeline.stages import ingest_validated

    cfg = load_config(PARAMS, small_study(project, tiny_model_dir, "tune.trials=2"), environ={})
    ingest_validated(cfg)
    summary = tuning_flow(cfg=cfg)
    assert (summary["trials_run"], summary["trials_in_study"]) == (2, 2)
    assert Path(summary["recipe"]) == project / "recipes" / "tuned.yaml"
    tuned = load_config(PARAMS, [f"project_dir={project}"], environ={}, recipes=["tuned"])  # by name, from recipes/
    assert tuned.train.learning_rate == summary["best_params"]["learning_rate"]


def test_two_workers_join_one_study_on_postgresql(project: Path, tiny_model_dir: Path, prefect_api: str) -> None:
    """Two `emotion tune` processes at once on one PostgreSQL study, as on two machines (own MLflow stores)."""
    import tempfile

    import optuna

    from pipeline.ops import services as svc
    from pipeline.stages import ingest_validated
    from tests.conftest import free_port

    root = Path(tempfile.mkdtemp(prefix="emotion-tune-pg-"))  # short: PostgreSQL's socket path is limited
    root.chmod(0o755)
    services = svc.Services(root, pg_port=free_port(), mlflow_port=free_port(), prefect_port=free_port())
    try:
        svc.start(services, names=("postgres",), report=lambda _message: None)
        url = services.database_url("optuna")
        ingest_validated(load_config(PARAMS, small_study(project, tiny_model_dir), environ={}))
        env = cli_env(prefect_api, OPTUNA_STORAGE=url)
        workers = []
        for seed in (1, 2):
            overrides = small_study(project, tiny_model_dir, f"tune.seed={seed}", "tune.study=shared")
            overrides.append(f"mlflow.tracking_uri=sqlite:///mlflow/worker-{seed}.db")
            args = [str(BIN / "emotion"), "tune", "--config", str(PARAMS), "--trials", "1"]
            for item in overrides:
                args += ["--set", item]
            workers.append(
                subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        outputs = [worker.communicate(timeout=900)[0].decode() for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
        study = optuna.load_study(study_name="shared", storage=url)
        assert len(study.trials) == 2  # one trial from each worker, in one study
        assert [sum(line.startswith("trial ") for line in o.splitlines()) for o in outputs] == [1, 1], outputs
        assert all("study     shared in postgresql" in output for output in outputs), outputs
    finally:
        svc.stop(services, report=lambda _message: None)
        shutil.rmtree(root, ignore_errors=True)
