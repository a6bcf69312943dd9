"""Promotion: the one way a model reaches the registry alias ``champion``.

Score the current champion on the challenger's test set, compare the two on the same rows (paired bootstrap,
McNemar), gate, register the challenger once (alias ``challenger``), and promote it only while the champion it was
compared with is still the champion. If another run moved the champion meanwhile, score the new one and gate again
(up to ``PROMOTION_ATTEMPTS`` times). Scoring the champion is the caller's (it needs a model and the config): the
stage layer passes it in as ``score``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import console
from pipeline.config import EvaluateConfig, GateConfig, RegistrySettings
from pipeline.data.encode import PreparedData
from pipeline.evaluation import evaluate, gate, intervals, model_card
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.cross_validation import CrossValidation
from pipeline.ops.faults import fault_point
from pipeline.registry import champion_alias, connection, model_versions, run_log

log = logging.getLogger(__name__)

PROMOTION_ATTEMPTS = 3  # re-score and re-gate when another run moved the champion meanwhile
GATE_JSON, GATE_MD, COMPARISON_MD, BEHAVIOUR_JSON = "gate.json", "gate.md", "comparison.md", "behaviour.json"


@dataclass(frozen=True)
class EvaluatedRun:
    """What an evaluated run produced: all that gating and registering need, from memory or from artifacts/."""

    labels: list[str]
    metrics: dict[str, float]  # the challenger's test metrics (metrics.json)
    behaviour: BehaviourReport
    calibration: dict[str, float]  # temperature and validation figures
    lineage: dict[str, str]  # data_hash, data_source, git_commit, run_id: tags of the version and the run
    root: Path  # where the evaluation and gate files are (the run's folder)
    plots: Path
    model: Path  # the model folder to register
    cross_validation: CrossValidation | None = None  # evaluate.cv_folds: the folds' mean and std, for the card

    @property
    def run_id(self) -> str:
        return self.lineage["run_id"]

    def files(self) -> list[Path]:
        """Everything the run logs under ``evaluation/``: scores, plots, behaviour, gate verdict, comparison."""
        root, plots = self.root, self.plots
        return [
            root / evaluate.METRICS_FILE,
            root / evaluate.PREDICTIONS_FILE,
            root / evaluate.PER_CLASS_FILE,
            root / evaluate.REPORT_FILE,
            plots / evaluate.CONFUSION_PNG,
            plots / evaluate.CONFUSION_CSV,
            root / GATE_JSON,
            root / GATE_MD,
            root / COMPARISON_MD,
            root / BEHAVIOUR_JSON,
            plots / "training_curve.png",
            plots / "training_curve.csv",
        ]


@dataclass(frozen=True)
class ChampionScore:
    """The champion at scoring time and its metrics on the challenger's test set (None: none, or not comparable)."""

    version: str | None
    metrics: dict[str, float] | None
    notes: list[str] = field(default_factory=list)
    predictions: np.ndarray | None = None  # its decision per test row, for the paired comparison


@dataclass(frozen=True)
class PromotionResult:
    verdict: gate.GateVerdict  # the last gate decision (against the champion current at promotion time)
    version: str  # the registered challenger
    aliases: list[str]  # the challenger's aliases: challenger, and champion when promoted
    champion_before: str | None
    champion_metrics: dict[str, float] | None
    notes: list[str]  # what happened on the way: re-gates, giving up

    @property
    def promoted(self) -> bool:
        return model_versions.CHAMPION in self.aliases


ChampionScorer = Callable[[PreparedData], ChampionScore]  # the current champion on these test rows


def paired_comparison(
    evaluate_cfg: EvaluateConfig,
    confidence: float,
    evaluated: EvaluatedRun,
    prepared: PreparedData,
    champion: ChampionScore,
) -> intervals.PairedComparison | None:
    """Challenger vs champion on the same test rows (None when there is no comparable champion)."""
    if champion.metrics is None or champion.predictions is None:
        return None
    y_true = prepared.targets("test")
    candidate = evaluate.load_predictions(evaluated.root / evaluate.PREDICTIONS_FILE, y_true)
    return intervals.compare(
        y_true,
        candidate,
        champion.predictions,
        evaluated.labels,
        evaluate_cfg.bootstrap_samples,
        confidence,
        evaluate_cfg.seed,
    )


def version_tags(evaluated: EvaluatedRun, verdict: gate.GateVerdict, champion: ChampionScore) -> dict[str, str]:
    """Lineage, gate result, and both score sets (challenger and champion on the same test set)."""

    def scores(metrics: dict[str, float] | None) -> str:  # point values: the intervals would overflow a tag
        return json.dumps({k: round(v, 4) for k, v in (metrics or {}).items() if "_ci_" not in k})

    metrics = evaluated.metrics
    return evaluated.lineage | {
        "gate": "passed" if verdict.passed else "failed",
        "gate_failed_checks": "; ".join(c.name for c in verdict.failed)[:4000],
        "gate_hold": (verdict.hold or "")[:4000],
        "accuracy": f"{metrics['accuracy']:.4f}",
        "macro_f1": f"{metrics['macro_f1']:.4f}",
        "macro_f1_interval": evaluate.with_interval(metrics, "macro_f1"),
        "ece": f"{metrics['ece']:.4f}" if "ece" in metrics else "n/a",
        "temperature": f"{evaluated.calibration.get('temperature', 1.0):.4f}",
        "labels": ",".join(evaluated.labels),
        "compared_with_champion": champion.version or "none",
        "scores.challenger": scores(metrics),
        "scores.champion": scores(champion.metrics),
    }


def write_gate_files(
    evaluated: EvaluatedRun,
    verdict: gate.GateVerdict,
    champion: ChampionScore,
    paired: intervals.PairedComparison | None = None,
) -> None:
    """gate.json (for DVC and machines), gate.md and comparison.md (for people)."""
    root = evaluated.root
    run_log.write_json(
        root / GATE_JSON,
        verdict.to_dict() | {"champion_version": champion.version, "champion_metrics": champion.metrics},
    )
    (root / GATE_MD).write_text(verdict.to_markdown())
    (root / COMPARISON_MD).write_text(
        evaluate.comparison(evaluated.metrics, champion.metrics, evaluated.labels, paired)
    )


def _record(
    registry: RegistrySettings,
    mlflow_client: Any,
    evaluated: EvaluatedRun,
    version: str | None,
    tags: dict[str, str],
    card: str,
    export_onnx: bool,
) -> str:
    """Register the challenger once per run; on a re-gate, or when a retried task finds the version its first try
    created, bring its tags and card up to date instead (no second logged model, no second version)."""
    if version is not None:
        model_versions.update_version(registry, mlflow_client, version, tags, card)
        return version
    version = model_versions.version_of_run(registry, mlflow_client, evaluated.run_id)
    if version is None:
        logged = run_log.log_model(evaluated.run_id, evaluated.model, evaluated.labels, export_onnx)
        fault_point("register.logged")
        version = model_versions.register(registry, mlflow_client, logged, evaluated.run_id, tags, card)
        fault_point("register.created")
    else:
        model_versions.update_version(registry, mlflow_client, version, tags, card)
    model_versions.set_alias(registry, mlflow_client, model_versions.CHALLENGER, version)
    return version


def _promote(
    registry: RegistrySettings,
    mlflow_client: Any,
    version: str,
    verdict: gate.GateVerdict,
    champion: ChampionScore,
    actor: str,
) -> None:
    """Champion -> version, unless the champion is no longer the one the gate compared with (StaleChampion)."""
    against = f"v{champion.version}" if champion.version else "none"
    champion_alias.promote(
        registry,
        mlflow_client,
        version,
        actor=actor,
        reason=f"passed the gate ({len(verdict.checks)} checks) against champion {against}",
        kind="gate",
        expected_champion=champion.version,
    )


def gate_and_promote(
    registry: RegistrySettings,
    gate_cfg: GateConfig,
    evaluate_cfg: EvaluateConfig,
    evaluated: EvaluatedRun,
    prepared: PreparedData,
    *,
    actor: str,
    score: ChampionScorer,
    export_onnx: bool,
) -> PromotionResult:
    """Gate the challenger against the champion of the moment, register it, and promote it if it passed.

    ``prepared`` holds the test set the champion is scored on; ``score`` scores the champion (the flow passes a
    retried task). The evaluation files, the champion's scores and the verdict are logged to the run; with
    ``export_onnx`` the registered model carries its ONNX export.
    """
    mlflow_client = connection.client(registry)
    version: str | None = None
    notes: list[str] = []
    promoted = False
    for attempt in range(1, PROMOTION_ATTEMPTS + 1):
        champion = score(prepared)
        paired = paired_comparison(evaluate_cfg, gate_cfg.confidence, evaluated, prepared, champion)
        verdict = gate.decide(
            evaluated.metrics,
            champion.metrics,
            gate_cfg,
            evaluated.labels,
            evaluated.behaviour,
            champion.notes + notes[-1:],
            paired=paired,
            champion_version=champion.version,
        )
        write_gate_files(evaluated, verdict, champion, paired)
        card = model_card.build(
            evaluated.labels,
            evaluated.lineage,
            evaluated.metrics,
            verdict,
            evaluated.calibration,
            champion.version,
            evaluated.cross_validation,
        )
        tags = version_tags(evaluated, verdict, champion)
        version = _record(registry, mlflow_client, evaluated, version, tags, card, export_onnx)
        if champion.version == version:  # a retried task: its first try promoted this run's version already
            promoted = True
            break
        if not verdict.promotable:
            if verdict.passed:  # held: the champion could not be compared with it
                notes.append(
                    f"champion v{champion.version} kept: `emotion promote {version} --reason ...` replaces it "
                    "if a person decides so"
                )
            break
        try:
            _promote(registry, mlflow_client, version, verdict, champion, actor)
            promoted = True
            break
        except champion_alias.StaleChampion as exc:
            log.warning("attempt %d: %s; scoring the new champion and gating again", attempt, exc)
            notes.append(f"re-gated after: {exc}")
    else:
        notes.append(
            f"the champion kept moving: gave up after {PROMOTION_ATTEMPTS} attempts; "
            f"`emotion promote {version} --reason ...` promotes it by hand"
        )
        log.warning(notes[-1])
    assert version is not None  # the loop runs at least once
    _log_outcome(mlflow_client, evaluated, verdict, champion, version, paired)
    failed = f"{len(verdict.failed)} of {len(verdict.checks)} checks failed"
    status = "FAILED" if not verdict.passed else ("passed, held for a person to promote" if verdict.hold else "passed")
    console.stage("gate", f"{status}, {failed}")
    role = "champion" if promoted else "challenger"
    console.stage("register", f"{registry.model_name} version {version}, {role}")
    return PromotionResult(
        verdict=verdict,
        version=version,
        aliases=[model_versions.CHALLENGER] + ([model_versions.CHAMPION] if promoted else []),
        champion_before=champion.version,
        champion_metrics=champion.metrics,
        notes=notes,
    )


def _log_outcome(
    mlflow_client: Any,
    evaluated: EvaluatedRun,
    verdict: gate.GateVerdict,
    champion: ChampionScore,
    version: str,
    paired: intervals.PairedComparison | None,
) -> None:
    """The run keeps the evaluation files, the champion's scores on its test set, the paired differences
    (``vs_champion_<metric>`` with ``_ci_low/_ci_high``), the verdict and the version."""
    run_log.log_files(mlflow_client, evaluated.run_id, evaluated.files(), "evaluation")
    if champion.metrics:
        run_log.log_metrics(mlflow_client, evaluated.run_id, champion.metrics, prefix="champion_test_")
    if paired is not None:
        differences = {
            f"{key}{suffix}": value
            for key, diff in paired.differences.items()
            for suffix, value in (("", diff.value), ("_ci_low", diff.low), ("_ci_high", diff.high))
        }
        differences["accuracy_mcnemar_mid_p"] = paired.mcnemar.p_mid
        run_log.log_metrics(mlflow_client, evaluated.run_id, differences, prefix="vs_champion_")
    run_log.set_tags(
        mlflow_client, evaluated.run_id, {"gate": "passed" if verdict.passed else "failed", "model_version": version}
    )
