"""The evaluation gate: every check with its value, threshold and verdict.

Absolute floors (accuracy, macro-F1, per-class F1; the point value decides, its bootstrap interval is shown),
calibration (ECE), behaviour (minimum functionality, invariance), and no significant regression against the champion
scored on the same test rows: a paired bootstrap of (candidate - champion) for macro-F1 and each class's F1, and
McNemar's mid-p test for accuracy. A candidate is refused only when it is significantly worse by more than the
margin (``max_regression``, ``max_class_regression``): the upper bound of the interval is below -margin. Without
per-row predictions of both models (``paired``), the point values are compared against the same margins.

A champion that cannot be compared with the candidate (another label set, or no paired comparison on shared
test rows) is never replaced automatically: the verdict is held (``hold``) and a person decides with
`emotion promote`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.config import GateConfig
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.intervals import Difference, PairedComparison

EPSILON = 1e-9  # float-safe comparisons at the threshold


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    op: str = ">="  # ">=" floors, "<=" ceilings; vs champion: "upper >=" (the interval's upper bound), "McNemar >="
    interval: tuple[float, float] | None = None  # bootstrap interval of value, shown beside it
    conclusion: str = ""  # a paired comparison's reading, e.g. "not significantly worse at 95%"
    against: str = ""  # the champion a paired comparison is with, e.g. "v3"

    def value_text(self) -> str:
        if self.conclusion:  # a difference: signed
            low, high = self.interval or (self.value, self.value)
            return f"{self.value:+.4f} [{low:+.4f}, {high:+.4f}]"
        return f"{self.value:.4f}" + (f" [{self.interval[0]:.4f}, {self.interval[1]:.4f}]" if self.interval else "")

    def describe(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        if self.conclusion:
            name = f"{self.name} {self.against}".rstrip()
            return f"{mark}  {name}: {self.value_text()} ({self.conclusion})"
        return f"{mark}  {self.name}: {self.value_text()} (needs {self.op} {self.threshold:.4f})"


def _interval(metrics: dict[str, float], key: str) -> tuple[float, float] | None:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return None if low is None or high is None else (low, high)


def at_least(name: str, value: float, threshold: float, interval: tuple[float, float] | None = None) -> Check:
    return Check(name, value, threshold, value >= threshold - EPSILON, ">=", interval)


def at_most(name: str, value: float, threshold: float, interval: tuple[float, float] | None = None) -> Check:
    return Check(name, value, threshold, value <= threshold + EPSILON, "<=", interval)


def _reading(diff: Difference, margin: float, level: str) -> str:
    if diff.high < -margin - EPSILON:
        return f"significantly worse by more than {margin:.4f} at {level}"
    if diff.high < 0:
        return f"significantly worse, but not significantly by more than {margin:.4f} at {level}"
    return f"significantly better at {level}" if diff.low > 0 else f"not significantly worse at {level}"


def not_significantly_worse(name: str, diff: Difference, margin: float, level: str, against: str) -> Check:
    """Refused only when the upper bound of (candidate - champion) is below -margin."""
    passed = diff.high >= -margin - EPSILON
    reading = _reading(diff, margin, level)
    return Check(name, diff.value, -margin, passed, "upper >=", (diff.low, diff.high), reading, against)


def accuracy_vs_champion(paired: PairedComparison, margin: float, level: str, against: str) -> Check:
    """McNemar's mid-p test on the rows only one model gets right; refused if significantly worse beyond margin."""
    test, diff = paired.mcnemar, paired.differences["accuracy"]
    significant = test.lost > test.gained and test.p_mid < 1 - paired.confidence
    passed = not (significant and diff.value < -margin - EPSILON)
    if not significant:
        reading = f"not significantly worse at {level}"
    else:  # the margin is on the observed drop: McNemar tests whether there is one, not its size
        where = "within" if passed else "more than"
        reading = f"significantly worse at {level}, by {-diff.value:.4f} ({where} the {margin:.4f} margin)"
    reading = f"McNemar mid-p {test.p_mid:.3f}, {test.gained} rows gained, {test.lost} lost: {reading}"
    return Check(
        "accuracy vs champion", diff.value, -margin, passed, "McNemar >=", (diff.low, diff.high), reading, against
    )


def champion_checks(
    candidate: dict[str, float],
    champion: dict[str, float],
    cfg: GateConfig,
    labels: list[str],
    paired: PairedComparison | None,
    against: str,
) -> list[Check]:
    """No significant regression vs the champion (paired), or, without per-row predictions, on the point values."""
    keyed = [f"f1_{label}" for label in labels if f"f1_{label}" in champion]
    if paired is None:
        checks = [at_least("macro_f1 vs champion", candidate["macro_f1"], champion["macro_f1"] - cfg.max_regression)]
        return checks + [
            at_least(f"f1[{key[3:]}] vs champion", candidate[key], champion[key] - cfg.max_class_regression)
            for key in keyed
        ]
    level = f"{paired.confidence:.0%}"
    diffs = paired.differences
    return [
        not_significantly_worse("macro_f1 vs champion", diffs["macro_f1"], cfg.max_regression, level, against),
        accuracy_vs_champion(paired, cfg.max_regression, level, against),
    ] + [
        not_significantly_worse(f"f1[{key[3:]}] vs champion", diffs[key], cfg.max_class_regression, level, against)
        for key in keyed
        if key in diffs
    ]


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: list[Check]
    notes: list[str]  # context that is not a check, e.g. why the champion was not compared
    hold: str | None = None  # why the candidate must not replace the champion automatically, even if it passed

    @property
    def promotable(self) -> bool:
        """Passed, and compared with the champion it would replace: the automatic gate may promote it."""
        return self.passed and self.hold is None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def reasons(self) -> list[str]:
        return [c.describe() for c in self.checks] + self.notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
            "hold": self.hold,
        }

    def title(self) -> str:
        if not self.passed:
            return "FAILED"
        return "PASSED, held for a person to promote" if self.hold else "PASSED"

    def to_markdown(self) -> str:
        lines = [
            f"# Gate verdict: {self.title()}",
            "",
            "| check | value | threshold | result |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.name} | {c.value_text()} | {c.op} {c.threshold:.4f} | {'pass' if c.passed else 'FAIL'} |"
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
    paired: PairedComparison | None = None,
    champion_version: str | None = None,
) -> GateVerdict:
    """Pass only if every check passes. ``labels`` enables the per-class checks (``f1_<label>`` metrics).

    ``paired``: candidate vs ``champion`` on the same test rows (intervals.compare); without it the champion
    checks compare point values. ``*_ci_low/_ci_high`` metrics are shown beside the floor checks.
    """
    labels = labels or []
    notes = list(notes or [])
    checks = [
        at_least(key, candidate[key], floor, _interval(candidate, key))
        for key, floor in (("accuracy", cfg.min_accuracy), ("macro_f1", cfg.min_macro_f1))
    ]
    checks += [
        at_least(f"f1[{label}]", candidate[f"f1_{label}"], cfg.min_class_f1, _interval(candidate, f"f1_{label}"))
        for label in labels
    ]
    if "ece" in candidate:
        checks.append(at_most("expected calibration error", candidate["ece"], cfg.max_ece, _interval(candidate, "ece")))
    if behaviour is not None:
        if behaviour.mft_accuracy is None:
            notes.append("minimum-functionality cases skipped: none of the labels has project cases")
        else:
            checks.append(at_least("behaviour: minimum functionality", behaviour.mft_accuracy, cfg.min_mft_accuracy))
        checks.append(at_least("behaviour: invariance", behaviour.invariance_rate, cfg.min_invariance))
    hold = _hold(champion, paired, champion_version)
    if hold:
        notes.append(hold)
    elif champion is None:
        notes.append("no comparable champion: the absolute checks alone decide")
    if champion is not None:
        against = f"v{champion_version}" if champion_version else ""
        checks += champion_checks(candidate, champion, cfg, labels, paired, against)
    return GateVerdict(all(c.passed for c in checks), checks, notes, hold)


def _hold(
    champion: dict[str, float] | None, paired: PairedComparison | None, champion_version: str | None
) -> str | None:
    """Why a named champion cannot be replaced automatically: it was not compared with the candidate row by row
    (another label set, or no shared test rows), so only a person may decide to replace it."""
    if champion_version is None or (champion is not None and paired is not None):
        return None
    why = "it was not scored on this test set" if champion is None else "no paired comparison on shared test rows"
    return (
        f"not promoted automatically: champion v{champion_version} could not be compared with this candidate "
        f"({why}), so the absolute checks alone cannot replace it; a person can with `emotion promote VERSION "
        "--reason ...`"
    )
