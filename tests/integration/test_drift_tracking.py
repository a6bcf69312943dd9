"""A drift check's MLflow run on a real sqlite store: tagged with the champion it judged, scores and settings logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.monitoring.champion import load_champion
from pipeline.monitoring.drift_run import log_drift_check
from pipeline.monitoring.verdict import DriftVerdict, FeatureDrift
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import PARAMS

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"


@pytest.fixture
def cfg(tmp_path: Path):
    return load_config(PARAMS, [f"project_dir={tmp_path}", f"mlflow.lock_file={tmp_path}/mlflow/tracking.lock"], {})


def register_from_own_runs(cfg, model_dir: Path, count: int) -> list[str]:
    """``count`` real versions, each from its own training run (so each has a different run id)."""
    client = connection.client(cfg.registry)
    versions = []
    for _ in range(count):
        run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
        logged = run_log.log_model(run_id, model_dir, ["joy", "fear"])
        versions.append(
            model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed", "data_hash": "h"}, "card")
        )
    return versions


def verdict_on(champion: dict[str, str]) -> DriftVerdict:
    features = [
        FeatureDrift("length", "descriptor", "wasserstein", 0.5, 0.2, True),
        FeatureDrift("sentence_embedding", "embedding", "domain classifier ROC AUC", 0.51, 0.6, False),
    ]
    return DriftVerdict(
        True,
        ["because"],
        features,
        1.0,
        0.3,
        {"source": "b.txt", "rows": 40},
        {"rows": 600, "provenance": "test"},
        champion,
    )


def logged_run(cfg, run_id: str):
    return connection.client(cfg.registry).get_run(run_id)


def test_drift_check_run_is_tagged_with_the_champion_versions_training_run(
    cfg, tiny_model_dir: Path, tmp_path: Path
) -> None:
    register_from_own_runs(cfg, tiny_model_dir, 2)
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "2", actor="test", reason="champion to monitor")
    champion_run = client.get_model_version(MODEL, "2").run_id
    assert champion_run != client.get_model_version(MODEL, "1").run_id

    out = tmp_path / "check"
    out.mkdir()
    verdict = verdict_on({"name": MODEL, "version": "2", "data_hash": "h"})  # a verdict that names only the version
    (out / "verdict.json").write_text(json.dumps(verdict.to_dict()))
    run = logged_run(cfg, log_drift_check(cfg, verdict, out, "drift-check-test"))

    assert run.data.tags["champion_run_id"] == champion_run and run.data.tags["champion_version"] == "2"
    assert run.data.tags["drift"] == "true" and run.data.tags["drifted_features"] == "length"
    assert run.info.experiment_id == client.get_experiment_by_name(cfg.monitor.experiment).experiment_id
    assert run.data.metrics == {
        "drift_score.length": 0.5,
        "drift_score.sentence_embedding": 0.51,
        "drifted_share": 1.0,
        "drift": 1.0,
        "batch_rows": 40.0,
        "reference_rows": 600.0,
    }
    assert run.data.params["monitor.trigger"] == cfg.monitor.trigger
    assert set(run.data.params) == {f"monitor.{key}" for key in cfg.monitor.model_dump()}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "drift")} == {"drift/verdict.json"}

    # the flow's verdict carries the champion as load_champion read it from the registry: the same run
    champion = load_champion(cfg, tmp_path / "champion")
    run = logged_run(cfg, log_drift_check(cfg, verdict_on(champion.describe()), out))
    assert run.data.tags["champion_run_id"] == champion_run == champion.run_id


def test_drift_check_without_a_known_champion(cfg, tiny_model_dir: Path, tmp_path: Path) -> None:
    """No champion named: no champion tags (not the string 'None'); an unknown version: a clear error."""
    register_from_own_runs(cfg, tiny_model_dir, 1)
    run = logged_run(cfg, log_drift_check(cfg, verdict_on({}), tmp_path))
    assert not {"champion_run_id", "champion_version", "data_hash"} & set(run.data.tags)
    assert "None" not in run.data.tags.values()

    with pytest.raises(PipelineError, match="names emotion-classifier version 7, which the registry"):
        log_drift_check(cfg, verdict_on({"name": MODEL, "version": "7"}), tmp_path)
