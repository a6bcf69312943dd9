"""The significance-aware gate: candidate vs champion on the same test rows, intervals in every artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from emotion_cli import format_summary
from pipeline.config import EvaluateConfig, GateConfig
from pipeline.errors import PipelineError
from pipeline.evaluation import intervals, model_card
from pipeline.evaluation.evaluate import PREDICTIONS_FILE, load_predictions, score, write_evaluation
from pipeline.evaluation.gate import decide

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
GATE = GateConfig(min_accuracy=0, min_macro_f1=0, min_class_f1=0)  # only the champion checks matter here
ROWS = 120  # the sample data's test split: one text moves macro-F1 by about 0.008


def champion_rows(n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Truth and a champion right on 85% of the rows."""
    rng = np.random.default_rng(11)
    y_true = np.arange(n) % len(LABELS)
    wrong = rng.random(n) >= 0.85
    return y_true, np.where(wrong, (y_true + 1) % len(LABELS), y_true)


def worse_by(y_true: np.ndarray, champion: np.ndarray, texts: int) -> np.ndarray:
    """The champion's decisions with ``texts`` of its right answers turned wrong."""
    candidate = champion.copy()
    right = np.flatnonzero(champion == y_true)[:texts]
    candidate[right] = (y_true[right] + 2) % len(LABELS)
    return candidate


def probs_of(decisions: np.ndarray) -> np.ndarray:
    probs = np.full((len(decisions), len(LABELS)), 0.02)
    probs[np.arange(len(decisions)), decisions] = 0.9
    return probs


def gate_on(texts: int, cfg: GateConfig = GATE):
    y_true, champion = champion_rows()
    candidate = worse_by(y_true, champion, texts)
    ours, theirs = (score(y_true, probs_of(d), LABELS).metrics for d in (candidate, champion))
    paired = intervals.compare(y_true, candidate, champion, LABELS, 1000, cfg.confidence, 0)
    return ours, theirs, decide(ours, theirs, cfg, LABELS, paired=paired, champion_version="3")


def check(verdict, name: str):
    return next(c for c in verdict.checks if c.name == name)


def test_two_texts_worse_on_a_small_test_set_is_not_significantly_worse() -> None:
    ours, theirs, verdict = gate_on(2)
    assert theirs["macro_f1"] - ours["macro_f1"] > GATE.max_regression  # the old point rule refused this
    assert not decide(ours, theirs, GATE, LABELS).passed
    assert verdict.passed
    line = check(verdict, "macro_f1 vs champion").describe()
    assert re.fullmatch(
        r"pass  macro_f1 vs champion v3: -0\.0\d{3} \[-0\.\d{4}, [+-]0\.\d{4}\] \(not significantly worse at 95%\)",
        line,
    ), line
    accuracy = check(verdict, "accuracy vs champion")
    assert accuracy.passed and "McNemar mid-p 0.250, 0 rows gained, 2 lost" in accuracy.describe()
    table = verdict.to_markdown()
    assert re.search(
        r"\| accuracy vs champion \| -0\.0167 \[-0\.\d{4}, [+-]0\.\d{4}\] \| McNemar >= -0\.0100 \| pass \|", table
    )
    assert re.search(r"\| macro_f1 vs champion \| -0\.0\d{3} \[.*\] \| upper >= -0\.0100 \| pass \|", table)


def test_many_texts_worse_is_significantly_worse_and_refused() -> None:
    _, _, verdict = gate_on(25)
    assert not verdict.passed
    assert {"macro_f1 vs champion", "accuracy vs champion"} <= {c.name for c in verdict.failed}
    macro = check(verdict, "macro_f1 vs champion")
    low, high = macro.interval or (0.0, 0.0)
    assert low <= macro.value <= high < -GATE.max_regression
    assert "significantly worse by more than 0.0100 at 95%" in macro.describe()
    assert "McNemar mid-p 0.000" in check(verdict, "accuracy vs champion").describe()
    assert "| macro_f1 vs champion | -0." in verdict.to_markdown()  # the table shows the difference and interval


def test_a_larger_margin_lets_a_significant_but_small_loss_pass() -> None:
    _, _, strict = gate_on(12)
    _, _, lenient = gate_on(12, GateConfig(min_accuracy=0, min_macro_f1=0, min_class_f1=0, max_regression=0.2))
    assert "macro_f1 vs champion" in {c.name for c in strict.failed}
    assert "macro_f1 vs champion" not in {c.name for c in lenient.failed}
    assert (
        "significantly worse, but not significantly by more than 0.2000 at 95%"
        in check(lenient, "macro_f1 vs champion").describe()
    )
    accuracy = check(lenient, "accuracy vs champion")
    assert accuracy.passed and "significantly worse at 95%, by 0.1000 (within the 0.2000 margin)" in accuracy.describe()


def test_per_class_regression_is_paired_too() -> None:
    y_true, champion = champion_rows(600)
    candidate = champion.copy()
    fear = np.flatnonzero((y_true == LABELS.index("fear")) & (champion == y_true))
    candidate[fear[: len(fear) // 2]] = LABELS.index("joy")  # half of fear's right answers lost
    paired = intervals.compare(y_true, candidate, champion, LABELS, 1000, 0.95, 0)
    ours, theirs = (score(y_true, probs_of(d), LABELS).metrics for d in (candidate, champion))
    verdict = decide(ours, theirs, GATE, LABELS, paired=paired, champion_version="3")
    assert "f1[fear] vs champion" in {c.name for c in verdict.failed}
    assert check(verdict, "f1[sadness] vs champion").passed  # untouched class: difference exactly 0
    assert check(verdict, "f1[sadness] vs champion").interval == (0.0, 0.0)


def test_floor_checks_show_the_interval_beside_the_floor() -> None:
    y_true, decisions = champion_rows()
    metrics = score(y_true, probs_of(decisions), LABELS).metrics
    verdict = decide(metrics, None, GateConfig(), LABELS)
    line = check(verdict, "macro_f1").describe()
    assert re.fullmatch(r"pass  macro_f1: 0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] \(needs >= 0\.6000\)", line), line
    assert json.loads(json.dumps(verdict.to_dict()))["checks"][1]["interval"] == [
        metrics["macro_f1_ci_low"],
        metrics["macro_f1_ci_high"],
    ]


def test_metrics_json_per_class_json_and_predictions_carry_the_rows_and_intervals(tmp_path: Path) -> None:
    y_true, decisions = champion_rows()
    evaluation = score(y_true, probs_of(decisions), LABELS, uncertainty=EvaluateConfig(bootstrap_samples=200))
    paths = write_evaluation(evaluation, tmp_path, tmp_path / "plots")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["macro_f1_ci_low"] < metrics["macro_f1"] < metrics["macro_f1_ci_high"]
    assert metrics["f1_joy_ci_low"] <= metrics["f1_joy"] <= metrics["f1_joy_ci_high"]
    per_class = json.loads(paths["per_class"].read_text())
    assert per_class["joy"]["recall_ci_low"] <= per_class["joy"]["recall"] <= per_class["joy"]["recall_ci_high"]
    assert paths["predictions"] == tmp_path / PREDICTIONS_FILE
    np.testing.assert_array_equal(load_predictions(paths["predictions"], y_true), decisions)
    with pytest.raises(PipelineError, match="another test set"):
        load_predictions(paths["predictions"], y_true[:-1])
    with pytest.raises(PipelineError, match="run `emotion evaluate`"):
        load_predictions(tmp_path / "missing.npz", y_true)


def test_model_card_and_run_summary_show_intervals() -> None:
    ours, _, verdict = gate_on(2)
    card = model_card.build(LABELS, {}, ours, verdict, {"temperature": 1.0}, "3")
    interval = f"macro-F1 {ours['macro_f1']:.4f} [{ours['macro_f1_ci_low']:.4f}, {ours['macro_f1_ci_high']:.4f}]"
    assert interval in card
    assert f"joy {ours['f1_joy']:.3f} [{ours['f1_joy_ci_low']:.3f}, {ours['f1_joy_ci_high']:.3f}]" in card
    assert "macro_f1 vs champion v3: -0.0" in card and "not significantly worse at 95%" in card

    summary = {
        "data_source": "sample",
        "data_hash": "abc",
        "rows": {"test": ROWS},
        "training": {"steps": 1, "best_epoch": 1, "seconds": 1, "samples_per_second": 1, "device": "cpu"}
        | {"precision": "fp32", "temperature": 1.0, "trainable_parameters": 10, "total_parameters": 10},
        "metrics": ours,
        "behaviour": {"mft_accuracy": 1.0, "invariance_rate": 1.0},
        "gate": {"passed": verdict.passed, "reasons": verdict.reasons},
        "model": "emotion-classifier",
        "version": "4",
        "aliases": ["challenger", "champion"],
        "run_id": "r",
        "champion_before": "3",
        "run_dir": str(Path.cwd() / "artifacts" / "runs" / "r"),
        "log_file": "/elsewhere/run.log",
    }
    text = format_summary(summary)
    assert f"folder    {Path('artifacts/runs/r')}  (artifacts/latest" in text  # below the working directory: relative
    assert "log       /elsewhere/run.log" in text  # elsewhere: as given
    assert f"macro-F1 {ours['macro_f1']:.4f} [{ours['macro_f1_ci_low']:.2f}, {ours['macro_f1_ci_high']:.2f}]" in text
    assert "macro_f1 vs champion v3: -0.0" in text


def test_comparison_table_shows_the_paired_interval_of_each_change() -> None:
    from pipeline.evaluation.evaluate import comparison

    y_true, champion = champion_rows()
    candidate = worse_by(y_true, champion, 2)
    ours, theirs = (score(y_true, probs_of(d), LABELS).metrics for d in (candidate, champion))
    paired = intervals.compare(y_true, candidate, champion, LABELS, 500, 0.95, 0)
    table = comparison(ours, theirs, LABELS, paired)
    macro = paired.differences["macro_f1"]
    row = next(line for line in table.splitlines() if line.startswith("| macro_f1 |"))
    assert row.endswith(f"| {macro.value:+.4f} [{macro.low:+.4f}, {macro.high:+.4f}] |")
    assert f"{ours['macro_f1']:.4f} [{ours['macro_f1_ci_low']:.4f}, {ours['macro_f1_ci_high']:.4f}]" in row


def test_every_floor_check_carries_its_own_interval() -> None:
    """Per-class F1 and ECE checks show the interval of their own metric, not another's and not none."""
    y_true, decisions = champion_rows()
    metrics = score(y_true, probs_of(decisions), LABELS).metrics | {
        "ece": 0.05,
        "ece_ci_low": 0.03,
        "ece_ci_high": 0.07,
    }
    verdict = decide(metrics, None, GateConfig(), LABELS)
    for label in LABELS:
        key = f"f1_{label}"
        assert check(verdict, f"f1[{label}]").interval == (metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"])
    assert check(verdict, "expected calibration error").interval == (0.03, 0.07)


@pytest.mark.parametrize(
    ("champion_scored", "paired_given", "why"),
    [(False, False, "it was not scored on this test set"), (True, False, "no paired comparison on shared test rows")],
)
def test_a_passing_candidate_is_held_when_the_named_champion_could_not_be_compared(
    champion_scored: bool, paired_given: bool, why: str
) -> None:
    ours, theirs, paired_verdict = gate_on(0)
    y_true, champion = champion_rows()
    paired = intervals.compare(y_true, champion, champion, LABELS, 1000, GATE.confidence, 0)
    verdict = decide(
        ours,
        theirs if champion_scored else None,
        GATE,
        LABELS,
        paired=paired if paired_given else None,
        champion_version="3",
    )
    assert verdict.passed and not verdict.promotable
    assert verdict.hold is not None and "champion v3 could not be compared" in verdict.hold and why in verdict.hold
    assert verdict.hold in verdict.notes
    assert paired_verdict.hold is None and paired_verdict.promotable  # compared row by row: no hold


def test_without_a_named_champion_nothing_is_held() -> None:
    ours, _, _ = gate_on(0)
    verdict = decide(ours, None, GATE, LABELS)
    assert verdict.hold is None and verdict.promotable
    assert "no comparable champion: the absolute checks alone decide" in verdict.notes
