"""The tuning flow: the committed snapshot's train and validation splits -> an Optuna study -> the best trial as a
recipe. Wiring only; the search is ``pipeline.stages.tune``.

The study loop is one task, not a task per trial: the sampler and the pruner read every earlier trial from the
study storage before proposing or stopping the next, so trials in one process run one after another anyway, and a
retried trial task would only be a new Optuna trial. Parallelism comes from more workers: several runs of this
flow (or `emotion tune`), on one machine or many, that use the same ``tune.study`` and ``tune.storage`` (e.g. the
PostgreSQL database in ``OPTUNA_STORAGE``) join one study. The config is read where the flow runs, so each machine's
environment names its storage and tracking server.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import Config, load_config_from_env
from pipeline.data.encode import PreparedData
from pipeline.stages import tune


@task(name="search-data", cache_policy=NO_CACHE)
def search_data_task(cfg: Config) -> PreparedData:
    """The train and validation splits of the committed snapshot (test is left out here, before the study)."""
    return tune.search_data(cfg)


@task(name="study", cache_policy=NO_CACHE)
def study_task(cfg: Config, data: PreparedData) -> tune.TuneResult:
    return tune.run_study(cfg, data, on_trial=lambda _study, trial: print(tune.format_trial(trial)))


@flow(name="emotion-tuning", log_prints=True)
def tuning_flow(
    params: str | None = None, overrides: list[str] | None = None, cfg: Config | None = None
) -> dict[str, Any]:
    """Run ``tune.trials`` trials in the configured study and write its best trial as a recipe; returns the summary.

    The config is ``cfg`` if given, else ``params`` (default ./params.yaml) with ``overrides`` (``key=value`` items).
    """
    cfg = cfg or load_config_from_env(params, overrides)
    result = study_task(cfg, search_data_task(cfg))
    print(tune.format_result(result, cfg))
    return asdict(result) | {"recipe": str(result.recipe)}
