"""The evaluation gate: every check with its value, threshold and verdict.

Absolute floors (accuracy, macro-F1, per-class F1), calibration (ECE), behaviour (minimum functionality,
invariance), and no regression against the champion scored on the same test set, overall and per class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.config import GateConfig
from pipeline.evaluation.behaviour import BehaviourReport

EPSILON = 1e-9  # float-safe comparisons at the threshold


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    op: str = ">="  # ">=" for floors, "<=" for ceilings

    def describe(self) -> str:
        return (
            f"{'pass' if self.passed else 'FAIL'}  {self.name}: {self.value:.4f} (needs {self.op} {self.threshold:.4f})"
        )


def at_least(name: str, value: float, threshold: float) -> Check:
    return Check(name, value, threshold, value >= threshold - EPSILON, ">=")


def at_most(name: str, value: float, threshold: float) -> Check:
    return Check(name, value, threshold, value <= threshold + EPSILON, "<=")


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: list[Check]
    notes: list[str]  # context that is not a check, e.g. why the champion was not compared

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def reasons(self) -> list[str]:
        return [c.describe() for c in self.checks] + self.notes

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "notes": self.notes}

    def to_markdown(self) -> str:
        lines = [
            f"# Gate verdict: {'PASSED' if self.passed else 'FAILED'}",
            "",
            "| check | value | threshold | result |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.name} | {c.value:.4f} | {c.op} {c.threshold:.4f} | {'pass' if c.passed else 'FAIL'} |"
            for c in self.checks
        ]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    cfg: GateConfig,
    labels: list[str] | None = None,
    behaviour: BehaviourReport | None = None,
    notes: list[str] | None = None,
) -> GateVerdict:
    """Pass only if every check passes. ``labels`` enables the per-class checks (``f1_<label>`` metrics)."""
    labels = labels or []
    notes = list(notes or [])
    checks = [
        at_least("accuracy", candidate["accuracy"], cfg.min_accuracy),
        at_least("macro_f1", candidate["macro_f1"], cfg.min_macro_f1),
    ]
    checks += [at_least(f"f1[{label}]", candidate[f"f1_{label}"], cfg.min_class_f1) for label in labels]
    if "ece" in candidate:
        checks.append(at_most("expected calibration error", candidate["ece"], cfg.max_ece))
    if behaviour is not None:
        if behaviour.mft_accuracy is None:
            notes.append("minimum-functionality cases skipped: none of the labels has project cases")
        else:
            checks.append(at_least("behaviour: minimum functionality", behaviour.mft_accuracy, cfg.min_mft_accuracy))
        checks.append(at_least("behaviour: invariance", behaviour.invariance_rate, cfg.min_invariance))
    if champion is None:
        notes.append("no comparable champion: the absolute checks alone decide")
    else:
        checks.append(
            at_least("macro_f1 vs champion", candidate["macro_f1"], champion["macro_f1"] - cfg.max_regression)
        )
        checks += [
            at_least(
                f"f1[{label}] vs champion", candidate[f"f1_{label}"], champion[f"f1_{label}"] - cfg.max_class_regression
            )
            for label in labels
            if f"f1_{label}" in champion
        ]
    return GateVerdict(all(c.passed for c in checks), checks, notes)
