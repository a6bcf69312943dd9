"""stages.gate_and_promote and `emotion register` on a real sqlite MLflow registry with the tiny model.

One evaluated project is trained per module; each test gets its own empty registry.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline import stages
from pipeline.config import Config, load_config
from pipeline.data.encode import PreparedData
from pipeline.registry import champion_alias, connection, model_versions, promotion, run_log
from pipeline.registry.versioning import dvc_hash
from tests.conftest import PARAMS, classifier_folder, init_project, tiny_overrides

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"


@pytest.fixture(scope="module")
def evaluated_project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """A project after ingest, prepare, train, evaluate and behaviour: (project, EvaluatedRun without a run, data)."""
    project = init_project(tmp_path_factory.mktemp("promotion") / "project")
    cfg = load_config(PARAMS, tiny_overrides(project, tiny_model_dir), environ={})
    snapshot, data_hash, labels, _ = stages.ingest_validated(cfg)
    prepared, _ = stages.prepare_stage(cfg, snapshot.frame, labels)
    trained = stages.train_stage(cfg, prepared)
    evaluation, _ = stages.evaluate_stage(cfg, prepared)
    behaviour = stages.behaviour_stage(cfg, prepared)
    lineage = stages.lineage_of(cfg, data_hash, run_id="")
    layout = stages.Layout.of(cfg)
    return (
        project,
        stages.evaluated_run(labels, evaluation.metrics, behaviour, trained.calibration, lineage, layout),
        prepared,
    )


@pytest.fixture
def setup(evaluated_project, tiny_model_dir: Path, tmp_path: Path):
    """(config factory on a fresh registry, factory of an EvaluatedRun with its own MLflow run, prepared data)."""
    project, template, prepared = evaluated_project
    store = tmp_path / "mlflow"

    def config(*extra: str) -> Config:
        registry = [
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_root={store}/artifacts",
            f"mlflow.lock_file={store}/registry.lock",
        ]
        return load_config(PARAMS, tiny_overrides(project, tiny_model_dir, *registry, *extra), environ={})

    def evaluated(cfg: Config) -> promotion.EvaluatedRun:
        run_id = stages.start_run(cfg, connection.client(cfg.registry))
        return dataclasses.replace(template, lineage=template.lineage | {"run_id": run_id})

    return config, evaluated, prepared


def aliases(cfg: Config) -> dict[str, str]:
    return {k: str(v) for k, v in connection.client(cfg.registry).get_registered_model(MODEL).aliases.items()}


def test_passing_challenger_becomes_champion_and_the_next_is_compared_with_it(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    first = stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")
    assert first.verdict.passed and first.promoted and first.champion_before is None
    assert (first.version, first.aliases) == ("1", ["challenger", "champion"])
    assert "no comparable champion: the absolute checks alone decide" in first.verdict.notes

    run = evaluated(cfg)
    second = stages.gate_and_promote(cfg, run, prepared, actor="test")
    assert second.promoted and second.version == "2" and second.champion_before == "1"
    assert second.champion_metrics == pytest.approx(run.metrics)  # the same model, re-scored on the same test set
    assert "macro_f1 vs champion" in {c.name for c in second.verdict.checks}
    assert aliases(cfg) == {"champion": "2", "challenger": "2", "previous": "1"}

    client = connection.client(cfg.registry)
    version = client.get_model_version(MODEL, "2")
    assert version.tags["gate"] == "passed" and version.tags["compared_with_champion"] == "1"
    assert version.tags["run_id"] == run.run_id and "PASSED" in version.description
    logged = client.get_run(run.run_id)
    assert logged.data.tags["model_version"] == "2" and logged.data.tags["gate"] == "passed"
    assert logged.data.metrics["champion_test_macro_f1"] == pytest.approx(run.metrics["macro_f1"])
    files = {a.path for a in client.list_artifacts(run.run_id, "evaluation")}
    assert {"evaluation/gate.json", "evaluation/comparison.md", "evaluation/behaviour.json"} <= files
    assert [e.kind for e in champion_alias.history(cfg.registry, client)] == ["gate", "gate"]


def test_the_champion_comparison_is_paired_and_every_score_has_its_interval(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")
    run = evaluated(cfg)
    result = stages.gate_and_promote(cfg, run, prepared, actor="test")

    macro = next(c for c in result.verdict.checks if c.name == "macro_f1 vs champion")
    assert (macro.value, macro.interval) == (0.0, (0.0, 0.0))  # the same model on the same rows: no difference
    assert "pass  macro_f1 vs champion v1: +0.0000 [+0.0000, +0.0000] (not significantly worse at 95%)" in (
        result.verdict.reasons
    )
    assert "accuracy vs champion" in {c.name for c in result.verdict.checks}
    metrics = json.loads((cfg.artifacts / "metrics.json").read_text())
    assert metrics["macro_f1_ci_low"] <= metrics["macro_f1"] <= metrics["macro_f1_ci_high"]
    gate_json = json.loads((cfg.artifacts / "gate.json").read_text())
    assert next(c for c in gate_json["checks"] if c["name"] == "macro_f1")["interval"] == [
        metrics["macro_f1_ci_low"],
        metrics["macro_f1_ci_high"],
    ]

    client = connection.client(cfg.registry)
    logged = client.get_run(run.run_id).data.metrics
    assert logged["vs_champion_macro_f1"] == 0.0 and logged["vs_champion_macro_f1_ci_high"] == 0.0
    assert logged["champion_test_macro_f1_ci_low"] == pytest.approx(metrics["macro_f1_ci_low"])
    card = client.get_model_version(MODEL, result.version).description
    assert f"macro-F1 {metrics['macro_f1']:.4f} [{metrics['macro_f1_ci_low']:.4f}, " in card
    assert "macro_f1 vs champion v1: +0.0000" in card
    assert "evaluation/test_predictions.npz" in {a.path for a in client.list_artifacts(run.run_id, "evaluation")}


def test_failing_challenger_is_registered_as_challenger_only(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")
    strict = config("gate.min_macro_f1=1.0")
    result = stages.gate_and_promote(strict, evaluated(strict), prepared, actor="test")

    assert not result.verdict.passed and result.aliases == ["challenger"] and result.champion_before == "1"
    assert "macro_f1" in {c.name for c in result.verdict.failed}
    assert aliases(cfg) == {"champion": "1", "challenger": "2"}
    assert connection.client(cfg.registry).get_model_version(MODEL, "2").tags["gate"] == "failed"
    written = json.loads((strict.artifacts / "gate.json").read_text())
    assert written["passed"] is False and written["champion_version"] == "1"


def register_other(cfg: Config, model_dir: Path, labels: list[str]) -> str:
    """A second version that passed its gate in 'another run' (registered, not champion)."""
    client = connection.client(cfg.registry)
    run_id = stages.start_run(cfg, client)
    return model_versions.register(
        cfg.registry, client, run_log.log_model(run_id, model_dir, labels), run_id, {"gate": "passed"}, ""
    )


def test_champion_moved_meanwhile_is_rescored_and_regated(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    run = evaluated(cfg)
    stages.gate_and_promote(cfg, run, prepared, actor="test")
    other = register_other(cfg, run.model, run.labels)
    scored: list[str | None] = []

    def score_then_lose_the_race(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
        champion = stages.score_champion(cfg, prepared)
        scored.append(champion.version)
        if len(scored) == 1:  # another run promotes its model after this one scored the champion
            champion_alias.promote(
                cfg.registry, connection.client(cfg.registry), other, actor="another run", reason="won the race"
            )
        return champion

    result = stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test", score=score_then_lose_the_race)

    assert scored == ["1", other]  # the new champion was scored too
    assert result.promoted and result.version == "3" and result.champion_before == other
    assert result.notes == [f"re-gated after: the champion moved from 1 to {other} during this run"]
    assert (
        result.notes[0] in result.verdict.notes
        and f"champion v{other} scored on the same test set" in result.verdict.notes
    )
    client = connection.client(cfg.registry)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 3  # registered once, updated on the re-gate
    assert client.get_model_version(MODEL, "3").tags["compared_with_champion"] == other
    assert aliases(cfg) == {"champion": "3", "challenger": "3", "previous": other}
    assert [(e.kind, e.version) for e in champion_alias.history(cfg.registry, client)] == [
        ("gate", "1"),
        ("manual", other),
        ("gate", "3"),
    ]


def test_a_champion_that_keeps_moving_leaves_the_challenger_unpromoted(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    run = evaluated(cfg)
    stages.gate_and_promote(cfg, run, prepared, actor="test")
    other = register_other(cfg, run.model, run.labels)

    def always_lose_the_race(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
        champion = stages.score_champion(cfg, prepared)
        champion_alias.promote(
            cfg.registry,
            connection.client(cfg.registry),
            other if champion.version == "1" else "1",
            actor="x",
            reason="r",
        )
        return champion

    result = stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test", score=always_lose_the_race)

    assert result.verdict.passed and result.aliases == ["challenger"]
    assert len(result.notes) == promotion.PROMOTION_ATTEMPTS + 1 and "gave up after 3 attempts" in result.notes[-1]
    assert aliases(cfg)["challenger"] == "3" and aliases(cfg)["champion"] in ("1", other)


def test_a_champion_with_another_label_set_is_kept_until_a_person_promotes(
    setup, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    client = connection.client(cfg.registry)
    old_labels = ["calm", "upset"]
    old = register_other(cfg, classifier_folder(tiny_model_dir, tmp_path / "old", old_labels), old_labels)
    champion_alias.promote(cfg.registry, client, old, actor="alice", reason="the old label set")

    result = stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")

    assert result.verdict.passed and not result.promoted and result.champion_before == "1"
    hold = result.verdict.hold or ""
    assert "champion v1 could not be compared" in hold and "`emotion promote VERSION" in hold
    assert hold in result.verdict.notes and any("predicts ['calm', 'upset']" in n for n in result.verdict.notes)
    assert result.notes == ["champion v1 kept: `emotion promote 2 --reason ...` replaces it if a person decides so"]
    assert aliases(cfg) == {"champion": "1", "challenger": "2"}
    version = client.get_model_version(MODEL, "2")
    assert version.tags["gate"] == "passed" and version.tags["gate_hold"] == hold
    assert "PASSED, held for a person to promote" in version.description
    assert "held for a person" in (cfg.artifacts / promotion.GATE_MD).read_text()
    assert json.loads((cfg.artifacts / promotion.GATE_JSON).read_text())["hold"] == hold

    champion_alias.promote(
        cfg.registry, client, "2", actor="bob", reason="the new label set replaces the old one"
    )  # a person
    assert aliases(cfg) == {"champion": "2", "challenger": "2", "previous": "1"}


def test_a_champion_without_a_paired_comparison_is_kept(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")

    def without_rows(cfg: Config, prepared: PreparedData) -> promotion.ChampionScore:
        return dataclasses.replace(stages.score_champion(cfg, prepared), predictions=None)  # no shared rows

    result = stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test", score=without_rows)
    assert result.verdict.passed and not result.promoted
    assert "no paired comparison on shared test rows" in (result.verdict.hold or "")
    assert aliases(cfg) == {"champion": "1", "challenger": "2"}


def test_a_registry_error_while_gating_stops_before_registering(setup) -> None:
    from tests.integration.test_registry_integrity import broken_alias_table

    config, evaluated, prepared = setup
    cfg = config()
    stages.gate_and_promote(cfg, evaluated(cfg), prepared, actor="test")
    run = evaluated(cfg)
    with broken_alias_table(cfg), pytest.raises(connection.RegistryUnavailable, match="alias 'champion'"):
        stages.gate_and_promote(cfg, run, prepared, actor="test")  # not taken for 'no champion'
    client = connection.client(cfg.registry)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    assert (
        aliases(cfg) == {"champion": "1", "challenger": "1"} and len(champion_alias.history(cfg.registry, client)) == 1
    )
    assert "model_version" not in client.get_run(run.run_id).data.tags


def test_a_retried_gate_and_promote_keeps_one_version_and_one_promotion(setup) -> None:
    config, evaluated, prepared = setup
    cfg = config()
    run = evaluated(cfg)
    first = stages.gate_and_promote(cfg, run, prepared, actor="test")
    again = stages.gate_and_promote(cfg, run, prepared, actor="test")  # the task retried after it finished
    assert first.version == again.version == "1" and again.promoted
    client = connection.client(cfg.registry)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    experiment = connection.experiment_id(cfg.registry, client)
    logged = client.search_logged_models([experiment], filter_string=f"source_run_id='{run.run_id}'")
    assert len(logged) == 1  # the retry did not log the model again
    assert [e.version for e in champion_alias.history(cfg.registry, client)] == ["1"]


def test_a_prefect_task_retried_after_registering_leaves_one_version(setup, prefect_harness: None) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    config, evaluated, prepared = setup
    cfg = config()
    run = evaluated(cfg)
    tries: list[str] = []

    @task(retries=1, retry_delay_seconds=0, cache_policy=NO_CACHE)
    def register_then_crash() -> str:
        result = stages.gate_and_promote(cfg, run, prepared, actor="test")
        tries.append(result.version)
        if len(tries) == 1:
            raise ConnectionError("the worker lost its connection after registering")
        return result.version

    @flow
    def retrying() -> str:
        return register_then_crash()

    assert retrying() == "1" and tries == ["1", "1"]
    assert len(connection.client(cfg.registry).search_model_versions(f"name='{MODEL}'")) == 1


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch):
    """cli.main setdefault()s some environment variables; pin them so monkeypatch restores them afterwards."""
    for key, value in cli.QUIET_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))


def test_cli_prepare_train_evaluate_register(project: Path, tiny_model_dir: Path, quiet_env, capsys) -> None:
    common = ["--config", str(PARAMS)]
    for item in tiny_overrides(project, tiny_model_dir):
        common += ["--set", item]
    for command in ("ingest", "prepare", "train", "evaluate"):
        assert cli.main([command, *common]) == 0, command
    capsys.readouterr()

    assert cli.main(["register", *common]) == 0
    out = capsys.readouterr().out
    assert "gate      PASSED" in out and f"registry  {MODEL} version 1 -> aliases: challenger, champion" in out

    cfg = load_config(PARAMS, tiny_overrides(project, tiny_model_dir), environ={})
    client = connection.client(cfg.registry)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1" and version.tags["data_hash"] == dvc_hash(project / "data.dvc")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data_hash"] == version.tags["data_hash"]
    assert "test_macro_f1" in run.data.metrics and "behaviour_invariance_rate" in run.data.metrics
    assert "evaluation/gate.json" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert json.loads((project / "artifacts" / "gate.json").read_text())["passed"] is True

    assert cli.main(["register", *common, "--set", "gate.min_macro_f1=1.0"]) == 0  # a refused model is no error
    out = capsys.readouterr().out
    assert "gate      FAILED" in out and "aliases: challenger\n" in out and "champion unchanged (version 1)" in out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
