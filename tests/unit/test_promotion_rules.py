"""promotion.py's decisions on a real sqlite MLflow registry (a copy of a migrated template, tests/mlflow_store.py)
with hand-made evaluation files: no model is trained or logged. What the version is tagged with, when the paired
comparison runs, the gate files, and gate_and_promote's ways out: promoted, failed, held, re-gated after the
champion moved, given up, and a retried task that finds its version already champion."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.config import EvaluateConfig, GateConfig, RegistrySettings
from pipeline.data.encode import LabelMap, PreparedData
from pipeline.evaluation import evaluate, gate, intervals, model_card
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.cross_validation import CrossValidation
from pipeline.registry import champion_alias, connection, promotion
from pipeline.registry.promotion import ChampionScore, EvaluatedRun
from tests.mlflow_store import registry_on_copy, scratch_folder

MODEL = "emotion-classifier"
LABELS = ["joy", "fear"]
Y_TRUE = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
METRICS = {
    "accuracy": 0.9,
    "accuracy_ci_low": 0.7,
    "accuracy_ci_high": 1.0,
    "macro_f1": 0.89999,
    "f1_joy": 0.9,
    "f1_fear": 0.9,
    "ece": 0.05,
}
PASSING = GateConfig(min_accuracy=0.5, min_macro_f1=0.5, min_class_f1=0.5, min_mft_accuracy=0.0, min_invariance=0.0)
BOOTSTRAP = EvaluateConfig(bootstrap_samples=100, seed=7)


@pytest.fixture
def folder() -> Iterator[Path]:
    with scratch_folder() as path:
        yield path


def prepared() -> PreparedData:
    labels = [LABELS[i] for i in Y_TRUE]
    test = pd.DataFrame({"text": [f"text {i}" for i in range(len(Y_TRUE))], "label": labels, "label_id": Y_TRUE})
    return PreparedData({"test": test}, LabelMap(LABELS))


def evaluated_run(
    root: Path,
    run_id: str = "r1",
    metrics: dict[str, float] = METRICS,
    cross_validation: CrossValidation | None = None,
    **calibration: float,
) -> Any:
    """An EvaluatedRun whose files all exist (the challenger predicts every row right but the last)."""
    root.mkdir(parents=True, exist_ok=True)
    run = EvaluatedRun(
        labels=LABELS,
        metrics=metrics,
        behaviour=no_behaviour_cases(),
        calibration=dict(calibration),
        lineage={"data_hash": "abc123", "git_commit": "deadbeef", "run_id": run_id},
        root=root,
        plots=root,
        model=root / "model",
        cross_validation=cross_validation,
    )
    for path in run.files():
        path.write_text("x")
    y_pred = Y_TRUE.copy()
    y_pred[-1] = 1 - y_pred[-1]
    np.savez(root / evaluate.PREDICTIONS_FILE, y_true=Y_TRUE, y_pred=y_pred, probs=np.eye(2)[y_pred])
    return run


def no_behaviour_cases() -> BehaviourReport:
    return BehaviourReport(mft_accuracy=None, invariance_rate=1.0, mean_probability_shift=0.0, cases=0)


def verdict(passed: bool = True, hold: str | None = None) -> gate.GateVerdict:
    checks = [gate.at_least("accuracy", 0.9, 0.5), gate.at_least("macro_f1", 0.4 if not passed else 0.9, 0.5)]
    if not passed:
        checks.append(gate.at_most("expected calibration error", 0.3, 0.15))
    return gate.GateVerdict(passed, checks, [], hold)


# what a run logs


def test_a_runs_evaluation_files_are_its_scores_gate_files_and_plots(tmp_path: Path) -> None:
    run = EvaluatedRun(LABELS, METRICS, no_behaviour_cases(), {}, {}, tmp_path / "run", tmp_path / "plots", tmp_path)
    assert [str(path.relative_to(tmp_path)) for path in run.files()] == [
        "run/metrics.json",
        "run/test_predictions.npz",
        "run/per_class.json",
        "run/classification_report.txt",
        "plots/confusion_matrix.png",
        "plots/confusion.csv",
        "run/gate.json",
        "run/gate.md",
        "run/comparison.md",
        "run/behaviour.json",
        "plots/training_curve.png",
        "plots/training_curve.csv",
    ]


# version tags


def test_version_tags_carry_lineage_gate_result_and_both_score_sets(tmp_path: Path) -> None:
    run = evaluated_run(tmp_path, temperature=1.23456)
    champion = ChampionScore("3", {"accuracy": 0.81234, "accuracy_ci_low": 0.7})
    assert promotion.version_tags(run, verdict(), champion) == {
        "data_hash": "abc123",
        "git_commit": "deadbeef",
        "run_id": "r1",
        "gate": "passed",
        "gate_failed_checks": "",
        "gate_hold": "",
        "accuracy": "0.9000",
        "macro_f1": "0.9000",
        "macro_f1_interval": "0.9000",
        "ece": "0.0500",
        "temperature": "1.2346",
        "labels": "joy,fear",
        "compared_with_champion": "3",
        "scores.challenger": json.dumps(
            {"accuracy": 0.9, "macro_f1": 0.9, "f1_joy": 0.9, "f1_fear": 0.9, "ece": 0.05}
        ),  # point values rounded; no intervals
        "scores.champion": json.dumps({"accuracy": 0.8123}),
    }


def test_version_tags_of_a_failed_or_held_verdict_without_champion_or_calibration(tmp_path: Path) -> None:
    metrics = {k: v for k, v in METRICS.items() if k != "ece"} | {"macro_f1_ci_low": 0.8, "macro_f1_ci_high": 0.95}
    run = evaluated_run(tmp_path, metrics=metrics)
    failed = promotion.version_tags(run, verdict(passed=False, hold="h" * 5000), ChampionScore(None, None))
    assert failed["gate"] == "failed"
    assert failed["gate_failed_checks"] == "macro_f1; expected calibration error"
    assert failed["gate_hold"] == "h" * 4000
    assert failed["ece"] == "n/a" and failed["temperature"] == "1.0000"
    assert failed["macro_f1_interval"] == "0.9000 [0.8000, 0.9500]"
    assert failed["compared_with_champion"] == "none" and failed["scores.champion"] == "{}"


def test_version_tags_cut_the_failed_checks_to_what_a_tag_holds(tmp_path: Path) -> None:
    checks = [gate.at_least("x" * 2500, 0.1, 0.5), gate.at_least("y" * 2500, 0.1, 0.5)]
    failed = gate.GateVerdict(False, checks, [])
    tags = promotion.version_tags(evaluated_run(tmp_path), failed, ChampionScore(None, None))
    assert tags["gate_failed_checks"] == "x" * 2500 + "; " + "y" * 1498


# the paired comparison


@pytest.mark.parametrize(
    "champion", [ChampionScore("2", None, predictions=Y_TRUE), ChampionScore("2", {"accuracy": 1.0})]
)
def test_no_paired_comparison_without_the_champions_scores_and_decisions(tmp_path: Path, champion: Any) -> None:
    assert promotion.paired_comparison(BOOTSTRAP, 0.9, evaluated_run(tmp_path), prepared(), champion) is None


def test_the_paired_comparison_uses_the_saved_decisions_and_the_configured_bootstrap(tmp_path: Path) -> None:
    champion = ChampionScore("2", {"accuracy": 1.0}, predictions=Y_TRUE)
    paired = promotion.paired_comparison(BOOTSTRAP, 0.8, evaluated_run(tmp_path), prepared(), champion)
    candidate = np.load(tmp_path / evaluate.PREDICTIONS_FILE)["y_pred"]
    assert paired == intervals.compare(Y_TRUE, candidate, Y_TRUE, LABELS, 100, 0.8, 7)
    assert paired is not None and paired.differences["accuracy"].value == pytest.approx(-0.1)


def test_gate_files_hold_the_verdict_the_champion_and_the_comparison(tmp_path: Path) -> None:
    run = evaluated_run(tmp_path)
    champion = ChampionScore("2", {"accuracy": 1.0, "macro_f1": 1.0}, predictions=Y_TRUE)
    paired = promotion.paired_comparison(BOOTSTRAP, 0.9, run, prepared(), champion)
    decided = verdict(passed=False)
    promotion.write_gate_files(run, decided, champion, paired)
    saved = json.loads((tmp_path / promotion.GATE_JSON).read_text())
    assert saved == json.loads(json.dumps(decided.to_dict())) | {
        "champion_version": "2",
        "champion_metrics": {"accuracy": 1.0, "macro_f1": 1.0},
    }
    assert (tmp_path / promotion.GATE_MD).read_text() == decided.to_markdown()
    expected = evaluate.comparison(METRICS, champion.metrics, LABELS, paired)
    assert (tmp_path / promotion.COMPARISON_MD).read_text() == expected
    assert expected != evaluate.comparison(METRICS, champion.metrics, LABELS)  # the paired intervals are in it


# gate_and_promote


class Registry:
    """A registry copy with one registered version per run, and the helpers a gate_and_promote test needs."""

    def __init__(self, folder: Path) -> None:
        self.settings: RegistrySettings = registry_on_copy(folder)
        self.folder = folder
        self.client = connection.client(self.settings)
        self.client.create_registered_model(MODEL)

    def evaluated(self, registered: bool = True, cross_validation: CrossValidation | None = None) -> Any:
        """A run with its registered version (as a retried registration finds it: nothing is logged here), or
        without one and with a stand-in model folder (the version is created from the model logged then)."""
        experiment = connection.experiment_id(self.settings, self.client)
        run_id = self.client.create_run(experiment).info.run_id
        if registered:
            self.client.create_model_version(MODEL, str(self.folder / run_id), run_id=run_id)
        run = evaluated_run(self.folder / run_id, run_id, METRICS, cross_validation)
        run.model.mkdir()
        (run.model / "config.json").write_text("{}")
        return run

    def aliases(self) -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(MODEL).aliases.items()}

    def gate(self, run: Any, score: Callable[[PreparedData], ChampionScore], cfg: GateConfig = PASSING) -> Any:
        return promotion.gate_and_promote(
            self.settings, cfg, BOOTSTRAP, run, prepared(), actor="ci", score=score, export_onnx=False
        )


def no_champion(_: PreparedData) -> ChampionScore:
    return ChampionScore(None, None)


def log_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """What ``logger`` said, white space folded (stage names are padded to a column)."""
    return [" ".join(r.getMessage().split()) for r in caplog.records if r.name == logger]


def stage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return log_lines(caplog, "pipeline.console")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return log_lines(caplog, "pipeline.registry.promotion")


def test_a_passing_challenger_without_champion_is_promoted_and_logged(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(folder)
    folds = CrossValidation(folds=[{"accuracy": 0.8, "macro_f1": 0.7}, {"accuracy": 0.9, "macro_f1": 0.8}], seed=1)
    run = registry.evaluated(cross_validation=folds)
    with caplog.at_level(logging.INFO):
        result = registry.gate(run, no_champion)
    assert result.promoted and (result.version, result.aliases) == ("1", ["challenger", "champion"])
    assert (result.champion_before, result.champion_metrics, result.notes) == (None, None, [])
    assert registry.aliases() == {"challenger": "1", "champion": "1"}
    event = champion_alias.history(registry.settings, registry.client)[-1]
    assert (event.kind, event.actor, event.reason) == ("gate", "ci", "passed the gate (6 checks) against champion none")
    version = registry.client.get_model_version(MODEL, "1")
    assert version.tags.items() >= promotion.version_tags(run, result.verdict, ChampionScore(None, None)).items()
    assert version.description == model_card.build(LABELS, run.lineage, METRICS, result.verdict, {}, None, folds)
    logged = registry.client.get_run(run.run_id).data
    assert (logged.tags["gate"], logged.tags["model_version"]) == ("passed", "1")
    assert logged.metrics == {}  # no champion: no scores of it, no differences
    artifacts = {f.path for f in registry.client.list_artifacts(run.run_id, "evaluation")}
    assert artifacts == {f"evaluation/{path.name}" for path in run.files()}
    assert stage_lines(caplog) == ["gate passed, 0 of 6 checks failed", f"register {MODEL} version 1, champion"]


def test_a_run_without_a_version_logs_its_model_and_registers_it_as_challenger(folder: Path) -> None:
    registry = Registry(folder)
    run = registry.evaluated(registered=False)
    result = registry.gate(run, no_champion, PASSING.model_copy(update={"min_accuracy": 0.95}))
    assert (result.version, result.aliases) == ("1", ["challenger"])
    assert registry.aliases() == {"challenger": "1"}
    version = registry.client.get_model_version(MODEL, "1")
    assert version.run_id == run.run_id and version.tags["gate"] == "failed"
    assert version.description == model_card.build(LABELS, run.lineage, METRICS, result.verdict, {}, None)
    model = registry.client.get_logged_model(version.source.removeprefix("models:/"))  # the model logged just now
    assert model.source_run_id == run.run_id and model.name == "model"


def test_a_failing_challenger_is_registered_as_challenger_only(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(folder)
    run = registry.evaluated()
    with caplog.at_level(logging.INFO):
        result = registry.gate(run, no_champion, PASSING.model_copy(update={"min_accuracy": 0.95}))
    assert not result.promoted and result.aliases == ["challenger"] and result.notes == []
    assert registry.aliases() == {"challenger": "1"}
    assert registry.client.get_model_version(MODEL, "1").tags["gate"] == "failed"
    assert registry.client.get_run(run.run_id).data.tags["gate"] == "failed"
    assert stage_lines(caplog) == ["gate FAILED, 1 of 6 checks failed", f"register {MODEL} version 1, challenger"]


def test_a_champion_scored_elsewhere_holds_a_passing_challenger_for_a_person(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(folder)
    registry.evaluated()
    champion_alias.promote(registry.settings, registry.client, "1", actor="a", reason="r")
    with caplog.at_level(logging.INFO):
        result = registry.gate(registry.evaluated(), lambda _: ChampionScore("1", None, notes=["scored elsewhere"]))
    assert result.verdict.passed and not result.promoted
    assert result.notes == ["champion v1 kept: `emotion promote 2 --reason ...` replaces it if a person decides so"]
    assert "scored elsewhere" in result.verdict.notes  # the champion's notes reach the verdict
    assert registry.aliases() == {"challenger": "2", "champion": "1"}
    assert stage_lines(caplog)[0].startswith("gate passed, held for a person to promote, 0 of ")


def test_a_champion_that_moved_meanwhile_is_scored_again_and_gated_against(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(folder)
    registry.evaluated()
    champion_alias.promote(registry.settings, registry.client, "1", actor="a", reason="r")
    run = registry.evaluated()
    seen: list[str | None] = []

    def score(data: PreparedData) -> ChampionScore:  # a champion right on every row it is given
        current = champion_alias._champion(registry.settings, registry.client)
        seen.append(current)
        if len(seen) == 1:  # another run promotes itself after this one scored version 1
            registry.evaluated()
            champion_alias.promote(registry.settings, registry.client, "3", actor="b", reason="r")
        return ChampionScore(current, {"accuracy": 0.5, "macro_f1": 0.5}, predictions=data.targets("test"))

    with caplog.at_level(logging.INFO):
        result = registry.gate(run, score)
    assert seen == ["1", "3"] and result.promoted and result.champion_before == "3"
    assert result.champion_metrics == {"accuracy": 0.5, "macro_f1": 0.5}
    assert len(result.notes) == 1 and result.notes[0].startswith("re-gated after: the champion moved from 1 to 3")
    assert result.notes[0] in result.verdict.notes  # the second verdict says why it was made
    assert registry.aliases() == {"challenger": "2", "champion": "2", "previous": "3"}
    moved = result.notes[0].removeprefix("re-gated after: ")
    assert warnings(caplog) == [f"attempt 1: {moved}; scoring the new champion and gating again"]
    event = champion_alias.history(registry.settings, registry.client)[-1]
    assert event.reason == f"passed the gate ({len(result.verdict.checks)} checks) against champion v3"
    version = registry.client.get_model_version(MODEL, "2")  # re-tagged after the second gate
    assert version.tags["compared_with_champion"] == "3" and version.tags["gate"] == "passed"
    assert version.description == model_card.build(LABELS, run.lineage, METRICS, result.verdict, {}, "3")
    champion = ChampionScore("3", {"accuracy": 0.5, "macro_f1": 0.5}, predictions=Y_TRUE)
    paired = promotion.paired_comparison(BOOTSTRAP, PASSING.confidence, run, prepared(), champion)
    assert paired is not None
    expected = evaluate.comparison(METRICS, champion.metrics, LABELS, paired)
    assert (run.root / promotion.COMPARISON_MD).read_text() == expected  # with the paired intervals
    differences = {
        f"vs_champion_{metric}{suffix}": value
        for metric, diff in paired.differences.items()
        for suffix, value in (("", diff.value), ("_ci_low", diff.low), ("_ci_high", diff.high))
    }
    assert registry.client.get_run(run.run_id).data.metrics == pytest.approx(
        {"champion_test_accuracy": 0.5, "champion_test_macro_f1": 0.5}
        | differences
        | {"vs_champion_accuracy_mcnemar_mid_p": paired.mcnemar.p_mid}
    )


def test_a_champion_that_keeps_moving_is_given_up_after_three_attempts(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(folder)
    run = registry.evaluated()
    moves = 0

    def score(_: PreparedData) -> ChampionScore:
        nonlocal moves
        current = champion_alias._champion(registry.settings, registry.client)
        registry.evaluated()
        moves += 1
        champion_alias.promote(registry.settings, registry.client, str(moves + 1), actor="b", reason="r")
        return ChampionScore(current, {"accuracy": 0.5} if current else None, predictions=Y_TRUE)

    with caplog.at_level(logging.INFO):
        result = registry.gate(run, score)
    assert moves == promotion.PROMOTION_ATTEMPTS and not result.promoted
    assert [n.split(":")[0] for n in result.notes] == ["re-gated after"] * 3 + ["the champion kept moving"]
    assert result.notes[-1] == (
        "the champion kept moving: gave up after 3 attempts; `emotion promote 1 --reason ...` promotes it by hand"
    )
    assert [n for n in result.verdict.notes if n.startswith("re-gated")] == [result.notes[1]]  # only the last
    assert [w.split(":")[0] for w in warnings(caplog)] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
        "the champion kept moving",
    ]
    assert warnings(caplog)[-1] == result.notes[-1]
    assert registry.aliases()["champion"] == "4" and registry.aliases()["challenger"] == "1"


def test_a_retried_task_whose_version_is_champion_already_is_promoted_without_a_move(folder: Path) -> None:
    registry = Registry(folder)
    run = registry.evaluated()
    champion_alias.promote(registry.settings, registry.client, "1", actor="a", reason="first try")
    result = registry.gate(run, lambda _: ChampionScore("1", None))
    assert result.promoted and result.aliases == ["challenger", "champion"]
    assert len(champion_alias.history(registry.settings, registry.client)) == 1
