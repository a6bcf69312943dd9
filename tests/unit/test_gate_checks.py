"""The gate's per-class, calibration, behaviour and champion checks."""

from __future__ import annotations

from pipeline.config import GateConfig
from pipeline.evaluation.behaviour import BehaviourReport
from pipeline.evaluation.gate import decide

LABELS = ["joy", "fear"]


def metrics(acc=0.9, macro=0.9, joy=0.9, fear=0.9, ece=0.05) -> dict[str, float]:
    return {"accuracy": acc, "macro_f1": macro, "f1_joy": joy, "f1_fear": fear, "ece": ece}


def failed(verdict) -> set[str]:
    return {c.name for c in verdict.failed}


def test_everything_fine_passes_with_every_check_listed() -> None:
    good = BehaviourReport(mft_accuracy=0.9, invariance_rate=0.95, mean_probability_shift=0.01, cases=10)
    verdict = decide(metrics(), metrics(), GateConfig(), LABELS, good)
    assert verdict.passed
    assert [c.name for c in verdict.checks] == [
        "accuracy",
        "macro_f1",
        "f1[joy]",
        "f1[fear]",
        "expected calibration error",
        "behaviour: minimum functionality",
        "behaviour: invariance",
        "macro_f1 vs champion",
        "f1[joy] vs champion",
        "f1[fear] vs champion",
    ]


def test_one_collapsed_class_fails_its_floor() -> None:
    verdict = decide(metrics(fear=0.1), None, GateConfig(min_class_f1=0.3), LABELS)
    assert not verdict.passed and failed(verdict) == {"f1[fear]"}


def test_per_class_regression_is_caught_even_when_macro_f1_holds() -> None:
    verdict = decide(
        metrics(joy=0.99, fear=0.75), metrics(joy=0.85, fear=0.95), GateConfig(max_class_regression=0.1), LABELS
    )
    assert failed(verdict) == {"f1[fear] vs champion"}


def test_poor_calibration_fails_with_a_ceiling() -> None:
    verdict = decide(metrics(ece=0.3), None, GateConfig(max_ece=0.15), LABELS)
    check = next(c for c in verdict.checks if c.name == "expected calibration error")
    assert not check.passed and check.op == "<=" and "needs <= 0.1500" in check.describe()


def test_behaviour_failures_fail_the_gate() -> None:
    brittle = BehaviourReport(mft_accuracy=0.5, invariance_rate=0.6, mean_probability_shift=0.3, cases=10)
    verdict = decide(metrics(), None, GateConfig(), LABELS, brittle)
    assert failed(verdict) == {"behaviour: minimum functionality", "behaviour: invariance"}


def test_label_sets_without_cases_note_the_skip() -> None:
    report = BehaviourReport(mft_accuracy=None, invariance_rate=1.0, mean_probability_shift=0.0, cases=3)
    verdict = decide(metrics(), None, GateConfig(), LABELS, report)
    assert verdict.passed and any("minimum-functionality cases skipped" in n for n in verdict.notes)
    assert "| behaviour: invariance | 1.0000 | >= 0.8500 | pass |" in verdict.to_markdown()


def test_the_report_states_every_check_its_value_interval_threshold_and_the_verdict_exactly() -> None:
    from pipeline.evaluation.gate import Check, GateVerdict, at_least, at_most

    floor = at_least("accuracy", 0.91234, 0.9, (0.9, 0.925))
    ceiling = at_most("expected calibration error", 0.2, 0.15)
    paired = Check("macro_f1 vs champion", -0.01, -0.02, True, "upper >=", (-0.03, 0.01), "not worse", "v3")
    assert floor.describe() == "pass  accuracy: 0.9123 [0.9000, 0.9250] (needs >= 0.9000)"
    assert ceiling.describe() == "FAIL  expected calibration error: 0.2000 (needs <= 0.1500)"
    assert paired.describe() == "pass  macro_f1 vs champion v3: -0.0100 [-0.0300, +0.0100] (not worse)"
    assert Check("d", 0.5, 0.0, True, conclusion="same").value_text() == "+0.5000 [+0.5000, +0.5000]"

    failed_verdict = GateVerdict(False, [floor, ceiling], ["champion v3 not compared: no predictions"])
    assert failed_verdict.title() == "FAILED" and not failed_verdict.promotable
    assert failed_verdict.failed == [ceiling] and failed_verdict.reasons == [
        floor.describe(),
        ceiling.describe(),
        "champion v3 not compared: no predictions",
    ]
    assert failed_verdict.to_markdown() == (
        "# Gate verdict: FAILED\n"
        "\n"
        "| check | value | threshold | result |\n"
        "|---|---|---|---|\n"
        "| accuracy | 0.9123 [0.9000, 0.9250] | >= 0.9000 | pass |\n"
        "| expected calibration error | 0.2000 | <= 0.1500 | FAIL |\n"
        "\n"
        "- champion v3 not compared: no predictions\n"
    )
    held = GateVerdict(True, [floor], [], hold="the champion could not be compared")
    assert held.title() == "PASSED, held for a person to promote" and held.passed and not held.promotable
    assert GateVerdict(True, [floor], []).title() == "PASSED" and GateVerdict(True, [floor], []).promotable
    assert held.to_dict() == {
        "passed": True,
        "checks": [
            {
                "name": "accuracy",
                "value": 0.91234,
                "threshold": 0.9,
                "passed": True,
                "op": ">=",
                "interval": (0.9, 0.925),
                "conclusion": "",
                "against": "",
            }
        ],
        "notes": [],
        "hold": "the champion could not be compared",
    }
