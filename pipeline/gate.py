"""The evaluation gate: absolute floors, and no regression against the champion on the same test set."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.config import GateConfig


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool

    def describe(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'}  {self.name}: {self.value:.4f} (needs >= {self.threshold:.4f})"


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: list[Check]
    notes: list[str]  # context that is not a check, e.g. why the champion was not compared

    @property
    def reasons(self) -> list[str]:
        return [c.describe() for c in self.checks] + self.notes

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "notes": self.notes}


def decide(candidate: dict[str, float], champion: dict[str, float] | None, cfg: GateConfig,
           notes: list[str] | None = None) -> GateVerdict:
    """Pass only if every floor holds and, with a champion, macro-F1 drops by at most ``max_regression``."""
    checks = [
        Check("accuracy", candidate["accuracy"], cfg.min_accuracy, candidate["accuracy"] >= cfg.min_accuracy),
        Check("macro_f1", candidate["macro_f1"], cfg.min_macro_f1, candidate["macro_f1"] >= cfg.min_macro_f1),
    ]
    notes = list(notes or [])
    if champion is None:
        notes.append("no comparable champion: the floors alone decide")
    else:
        floor = champion["macro_f1"] - cfg.max_regression
        within = champion["macro_f1"] - candidate["macro_f1"] <= cfg.max_regression + 1e-9  # float-safe at the edge
        checks.append(Check("macro_f1 vs champion", candidate["macro_f1"], floor, within))
    return GateVerdict(all(c.passed for c in checks), checks, notes)
