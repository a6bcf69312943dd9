"""pipeline.stages.tune: the search space as config, pruning at an evaluation, and a search that never sees test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.encode import LabelMap, PreparedData
from pipeline.errors import PipelineError
from pipeline.registry import connection
from pipeline.stages import tune
from pipeline.training.train import TrainResult
from tests.conftest import PARAMS


def config(tmp_path: Path, *extra: str):
    return load_config(PARAMS, [f"project_dir={tmp_path}", *extra], environ={})


def test_default_space_covers_the_issue_settings(tmp_path: Path) -> None:
    space = config(tmp_path).tune.search_space()
    assert set(space) == {
        "learning_rate",
        "batch_size",
        "epochs",
        "layer_lr_decay",
        "class_weights",
        "label_smoothing",
        "warmup_fraction",
    }
    assert space["learning_rate"].log and space["class_weights"].choices == ["none", "sqrt", "balanced"]
    assert "warmup_fraction" not in config(tmp_path, "tune.space.warmup_fraction=null").tune.search_space()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.space.momentum={type: float, low: 0.1, high: 0.9}", "unknown parameter 'momentum'"),
        ("tune.space.class_weights={type: categorical, choices: [none, huge]}", "'class_weights' may take 'huge'"),
        ("tune.space.label_smoothing={type: float, low: 0.0, high: 1.5}", "'label_smoothing' may take 1.5"),
        ("tune.space.epochs={type: int, low: 1.5, high: 3}", "whole-number"),
        ("tune.space.learning_rate={type: float, low: 0.0, high: 0.1, log: true}", "low > 0"),
        ("tune.space.grad_accumulation={type: categorical}", "non-empty list of choices"),
        ("tune.space.epochs={type: int, low: 4, high: 2}", "low <= high"),
    ],
)
def test_bad_search_space_is_a_pipeline_error_naming_the_parameter(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(PipelineError, match="tune.space") as error:
        config(tmp_path, override)
    assert message in str(error.value)


def test_storage_default_environment_and_set(tmp_path: Path) -> None:
    assert tune.storage_url(config(tmp_path)) == f"sqlite:///{tmp_path}/artifacts/tune/optuna.db"
    url = "postgresql://postgres@127.0.0.1:5432/optuna"
    from_env = load_config(PARAMS, [f"project_dir={tmp_path}"], environ={"OPTUNA_STORAGE": url})
    assert tune.storage_url(from_env) == url
    assert tune.storage_url(config(tmp_path, "tune.storage=sqlite:///s/study.db")) == f"sqlite:///{tmp_path}/s/study.db"


def test_reporter_prunes_below_the_median_and_lets_a_good_trial_go_on() -> None:
    import optuna

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    for value in (0.8, 0.6):
        done = study.ask()
        done.report(value, 1)
        study.tell(done, value)
    good = tune.PruningReporter(study.ask())
    good({"val_macro_f1": 0.9})
    logged: list[tuple[float, int]] = []
    poor = tune.PruningReporter(study.ask(), lambda row, n: logged.append((row["val_macro_f1"], n)))
    with pytest.raises(optuna.TrialPruned, match="evaluation 1"):
        poor({"val_macro_f1": 0.1})
    assert logged == [(0.1, 1)]


def prepared() -> PreparedData:
    def split(name: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"text": [f"{name} text {i}" for i in range(6)], "label": ["a", "b"] * 3, "label_id": [0, 1] * 3}
        )

    return PreparedData({name: split(name) for name in ("train", "validation", "test")}, LabelMap(["a", "b"]))


def test_study_never_gives_the_test_split_to_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training is replaced by a stand-in that records its data; the study, MLflow and recipe are real."""
    seen: list[PreparedData] = []

    def fake_train(data: PreparedData, model_cfg: Any, cfg: Any, output_dir: Path, on_evaluation: Any) -> TrainResult:
        seen.append(data)
        for step, f1 in enumerate((0.3, cfg.learning_rate * 100), start=1):
            on_evaluation({"epoch": 1, "step": step, "val_macro_f1": f1, "val_loss": 1.0})
        return TrainResult(output_dir, val_macro_f1=cfg.learning_rate * 100)

    monkeypatch.setattr(tune.train, "train", fake_train)
    cfg = config(tmp_path, "tune.trials=3", "tune.startup_trials=3")
    printed: list[str] = []
    result = tune.run_study(cfg, prepared(), on_trial=lambda _s, trial: printed.append(tune.format_trial(trial)))

    assert len(seen) == 3 and all(set(data.splits) == {"train", "validation"} for data in seen)
    test_texts = set(prepared().texts("test"))
    assert not any(test_texts & set(data.texts(split)) for data in seen for split in data.splits)
    assert result.trials_run == 3 and result.states == {"complete": 3} and len(printed) == 3
    assert result.best_value == pytest.approx(result.best_params["learning_rate"] * 100)

    client = connection.client(cfg.registry)
    experiment = client.get_experiment_by_name(cfg.tune.experiment)
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'")
    assert len(children) == 3 and all(
        len(client.get_metric_history(r.info.run_id, "val_macro_f1")) == 2 for r in children
    )

    tuned = load_config(PARAMS, [f"project_dir={tmp_path}"], environ={}, recipes=[str(result.recipe)])
    assert {k: getattr(tuned.train, k) for k in result.best_params} == result.best_params
    assert result.recipe == tmp_path / "recipes" / "tuned.yaml"

    again = tune.run_study(cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"trials": 1})}), prepared())
    assert (again.trials_run, again.trials_in_study) == (1, 4)  # a second worker (or run) joins the same study


def test_an_unreachable_storage_is_a_pipeline_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, "tune.storage=postgresql+psycopg2://nobody@127.0.0.1:1/optuna")
    with pytest.raises(PipelineError, match="cannot open Optuna storage .* check tune.storage"):
        tune.open_study(cfg, tune.storage_url(cfg))
