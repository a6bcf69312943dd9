"""Hyperparameter search with Optuna: TPE sampling, median pruning on validation macro-F1, the best trial as a recipe.

Each trial fine-tunes with its train settings on the train split and is judged on the validation split at every
evaluation of the loop (``train.train``'s ``on_evaluation``), so a poor trial is pruned early. The test split is
taken out of the data before the search starts: the search can never look at it. The study lives in an Optuna
storage (sqlite in ``artifacts/tune/`` by default, or any storage URL such as PostgreSQL): several workers, on one
machine or many, that use the same study name and storage join one study. Every trial is an MLflow run nested under
its worker's parent run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline import paths
from pipeline.config import Config, SearchParam, TrainConfig, find_recipe
from pipeline.data import clean, encode
from pipeline.data.encode import PreparedData
from pipeline.data.ingest import read_snapshot
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.registry import connection, run_log
from pipeline.training import train

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

SEARCH_SPLITS = ("train", "validation")  # all the search may see
DEFAULT_STORAGE = "tune/optuna.db"  # under artifacts_dir
PARENT_TAG = "mlflow.parentRunId"  # how MLflow nests a run under another
TrialCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def storage_url(cfg: Config) -> str:
    """The configured Optuna storage; none = sqlite in the artifacts folder (relative sqlite paths: the project's)."""
    if cfg.tune.storage is None:
        path = cfg.artifacts / DEFAULT_STORAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    prefix = "sqlite:///"
    url = cfg.tune.storage
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(cfg.path(url[len(prefix) :]))
    return url


def without_test(data: PreparedData) -> PreparedData:
    """The train and validation splits only: what the search optimises and judges on."""
    return PreparedData({split: data.splits[split] for split in SEARCH_SPLITS}, data.label_map)


def search_data(cfg: Config) -> PreparedData:
    """The committed (already validated) snapshot in data/, cleaned and encoded as training would, without test."""
    frame = read_snapshot(cfg.path(cfg.data.snapshot_dir))
    labels = encode.label_set(frame, cfg.data.labels)
    return without_test(encode.encode(clean.clean(frame, cfg.clean).frame, labels))


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The trial's train settings, drawn from the search space."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            params[name] = trial.suggest_categorical(name, spec.choices or [])
        elif spec.type == "int":
            params[name] = trial.suggest_int(name, int(spec.low or 0), int(spec.high or 0), log=spec.log)
        else:
            params[name] = trial.suggest_float(name, float(spec.low or 0), float(spec.high or 0), log=spec.log)
    return params


def trial_train_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The base train settings with the trial's values, validated; no checkpoints (a trial is never resumed)."""
    return TrainConfig.model_validate(base.model_dump() | params | {"resume": False})


@dataclass
class PruningReporter:
    """The loop's ``on_evaluation``: logs each evaluation, reports validation macro-F1 to Optuna at evaluation
    1, 2, ... (comparable across batch sizes, unlike optimizer steps) and stops a trial the pruner gives up on."""

    trial: optuna.Trial
    log_row: Callable[[dict[str, float], int], None] | None = None
    evaluations: int = 0

    def __call__(self, row: dict[str, float]) -> None:
        import optuna

        self.evaluations += 1
        if self.log_row:
            self.log_row(row, self.evaluations)
        self.trial.report(row["val_macro_f1"], self.evaluations)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"validation macro-F1 {row['val_macro_f1']:.4f} at evaluation {self.evaluations} is below the median"
            )


@dataclass
class _Tracker:
    """The worker's parent MLflow run and one nested run per trial."""

    client: Any
    experiment_id: str
    parent_id: str
    study: str

    @classmethod
    def start(cls, cfg: Config, storage: str) -> _Tracker:
        experiment_cfg = cfg.model_copy(
            update={"mlflow": cfg.mlflow.model_copy(update={"experiment": cfg.tune.experiment})}
        )
        client = connection.client(cfg.registry)
        experiment_id = connection.experiment_id(experiment_cfg.registry, client)
        tags = {
            "tune.study": cfg.tune.study,
            "tune.storage": redact(storage),
            "mlflow.runName": f"tune {cfg.tune.study}",
        }
        parent = client.create_run(experiment_id, tags=tags)
        run_log.log_param_values(client, parent.info.run_id, run_log.flatten(cfg.model_dump()))
        return cls(client, experiment_id, parent.info.run_id, cfg.tune.study)

    def start_trial(self, number: int, params: dict[str, Any]) -> str:
        tags = {PARENT_TAG: self.parent_id, "tune.study": self.study, "tune.trial": str(number)}
        run = self.client.create_run(self.experiment_id, tags=tags | {"mlflow.runName": f"trial {number}"})
        run_log.log_param_values(self.client, run.info.run_id, {f"train.{k}": v for k, v in params.items()})
        return str(run.info.run_id)

    def log_evaluation(self, run_id: str, row: dict[str, float], evaluation: int) -> None:
        metrics = {k: v for k, v in row.items() if k.startswith("val_") or k == "train_loss"}
        run_log.log_metrics(self.client, run_id, metrics, step=evaluation)

    def end_trial(self, run_id: str, state: str, value: float | None = None) -> None:
        if value is not None:
            run_log.log_metrics(self.client, run_id, {"selected_val_macro_f1": value})
        self.client.set_tag(run_id, "tune.state", state)
        run_log.end_run(self.client, run_id, "FAILED" if state == "fail" else "FINISHED")


@dataclass
class _Objective:
    """One trial: train with the sampled settings, judged (and pruned) on validation only."""

    cfg: Config
    data: PreparedData
    tracker: _Tracker

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        params = suggest(trial, self.cfg.tune.search_space())
        run_id = self.tracker.start_trial(trial.number, params)
        reporter = PruningReporter(trial, lambda row, n: self.tracker.log_evaluation(run_id, row, n))
        try:
            with tempfile.TemporaryDirectory(prefix=f"trial-{trial.number}-") as out:
                result = train.train(
                    self.data, self.cfg.model, trial_train_config(self.cfg.train, params), Path(out), reporter
                )
        except optuna.TrialPruned:
            self.tracker.end_trial(run_id, "pruned")
            raise
        except BaseException:
            self.tracker.end_trial(run_id, "fail")
            raise
        self.tracker.end_trial(run_id, "complete", result.val_macro_f1)
        return result.val_macro_f1


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str  # credentials hidden
    trials_run: int  # by this worker
    trials_in_study: int
    states: dict[str, int]  # of every trial in the study: complete, pruned, fail, ...
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    recipe: Path
    mlflow_run_id: str


def open_study(cfg: Config, storage: str) -> optuna.Study:
    """Create the study, or join it when another worker (or an earlier run) already did."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller prints one line per trial
    sampler = optuna.samplers.TPESampler(seed=cfg.tune.seed, n_startup_trials=cfg.tune.startup_trials)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=cfg.tune.startup_trials, n_warmup_steps=cfg.tune.warmup_evaluations
    )
    try:
        return optuna.create_study(
            storage=_rdb_storage(storage),
            sampler=sampler,
            pruner=pruner,
            study_name=cfg.tune.study,
            direction="maximize",
            load_if_exists=True,
        )
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        raise PipelineError(
            f"cannot open Optuna storage {redact(storage)}: {str(exc).splitlines()[0]}; "
            "check tune.storage (or OPTUNA_STORAGE)"
        ) from exc


def _rdb_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Connect, creating Optuna's tables the first time. Workers that start together on a fresh database race to
    create them (PostgreSQL then refuses the second ``CREATE TYPE``); the loser retries and finds them made."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            log.info("Optuna storage %s is being set up by another worker; retrying", redact(url))
            time.sleep(attempt)
    return optuna.storages.RDBStorage(url)  # the last attempt raises what it meets


def run_study(cfg: Config, data: PreparedData, on_trial: TrialCallback | None = None) -> TuneResult:
    """Run ``tune.trials`` trials in the shared study, then write its best trial (of all workers) as a recipe.

    Only the train and validation splits of ``data`` reach the trials."""
    import optuna

    recipe_target(cfg)  # before the first trial: a refusal at the end would waste the search
    storage = storage_url(cfg)
    study = open_study(cfg, storage)
    tracker = _Tracker.start(cfg, storage)
    before = len(study.trials)
    status = "FAILED"
    try:
        timeout = cfg.tune.timeout_minutes * 60 if cfg.tune.timeout_minutes else None
        study.optimize(
            _Objective(cfg, without_test(data), tracker),
            n_trials=cfg.tune.trials,
            timeout=timeout,
            callbacks=[on_trial] if on_trial else None,
        )
        trials = study.get_trials(deepcopy=False)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            raise PipelineError(
                f"no trial of study '{cfg.tune.study}' completed (all pruned or failed): widen tune.space, raise "
                "tune.warmup_evaluations or tune.startup_trials, or run more trials"
            )
        best = study.best_trial
        recipe = write_recipe(cfg, best)
        tracker.client.log_artifact(tracker.parent_id, str(recipe), "recipe")
        run_log.set_tags(tracker.client, tracker.parent_id, {"tune.best_trial": str(best.number)})
        run_log.log_metrics(tracker.client, tracker.parent_id, {"best_val_macro_f1": float(best.value or 0.0)})
        status = "FINISHED"
    finally:
        run_log.end_run(tracker.client, tracker.parent_id, status)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return TuneResult(
        cfg.tune.study,
        redact(storage),
        len(trials) - before,
        len(trials),
        states,
        best.number,
        float(best.value or 0.0),
        dict(best.params),
        recipe,
        tracker.parent_id,
    )


def write_recipe(cfg: Config, best: optuna.trial.FrozenTrial) -> Path:
    """The best trial's train settings as a recipe file (only the searched keys), with where it came from."""
    path = cfg.path(cfg.tune.recipe)
    base = "".join(f" --recipe {name}" for name in cfg.recipes)
    header = [
        f"# Best trial of Optuna study '{cfg.tune.study}': trial {best.number}, validation macro-F1 "
        f"{float(best.value or 0.0):.4f}.",
        f"# Written by `emotion tune` at {datetime.now(UTC).isoformat(timespec='seconds')}; chosen on the validation "
        "split only (the search never saw test).",
        f"# Searched over params.yaml{base}; use it the same way:",
        f"#   emotion run{base} --recipe {path}",
    ]
    body = yaml.safe_dump({"train": dict(best.params)}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers on one machine may finish at once
    tmp.write_text("\n".join(header) + "\n" + body)
    tmp.replace(path)
    return path


def format_trial(trial: optuna.trial.FrozenTrial) -> str:
    """One console line per finished trial: number, value or pruned/failed, and its settings."""
    settings = "  ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    state = trial.state.name.lower()
    if state == "complete":
        outcome = f"val macro-F1 {trial.value:.4f}"
    elif state == "pruned":
        outcome = f"pruned at evaluation {trial.last_step}"
    else:
        outcome = state
    return f"trial {trial.number:>3}  {outcome:<26} {settings}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_result(result: TuneResult, cfg: Config) -> str:
    """The closing summary of `emotion tune`."""
    states = ", ".join(f"{n} {state}" for state, n in sorted(result.states.items()))
    base = "".join(f" --recipe {name}" for name in cfg.recipes)
    return "\n".join(
        [
            "",
            "== emotion tune ==",
            f"study     {result.study} in {result.storage}: {result.trials_run} trials run here, "
            f"{result.trials_in_study} in the study ({states})",
            f"best      trial {result.best_trial}, validation macro-F1 {result.best_value:.4f}",
            f"          {'  '.join(f'{k}={_short(v)}' for k, v in result.best_params.items())}",
            f"recipe    {result.recipe}  (emotion run{base} --recipe {result.recipe})",
            f"mlflow    run {result.mlflow_run_id} (experiment {cfg.tune.experiment})",
        ]
    )


def recipe_target(cfg: Config, overwrite: bool = True) -> Path:
    """The recipe file the search will write (``tune.recipe``), refused when it is one of the recipes the search
    runs on, a project file or inside a managed folder, or (without ``overwrite``) an existing file."""
    project = Path(cfg.project_dir).resolve()
    managed = paths.managed_folders(cfg.write_folders(), project, paths.sqlite_folder(cfg.tracking_uri))
    inputs = [find_recipe(name, cfg.project_dir) for name in cfg.recipes]
    return paths.check_output(
        cfg.path(cfg.tune.recipe), flag="tune.recipe", inputs=inputs, managed=managed, overwrite=overwrite
    )


def tune(cfg: Config, on_trial: TrialCallback | None = None, overwrite: bool = False) -> TuneResult:
    """Search on the committed snapshot (`emotion tune`); an existing recipe file is replaced only with
    ``overwrite`` (the workers of one study replace it as they finish: ``run_study`` does)."""
    recipe_target(cfg, overwrite)
    return run_study(cfg, search_data(cfg), on_trial)
