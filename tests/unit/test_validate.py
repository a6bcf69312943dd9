"""pipeline.data.validate: the Great Expectations suite, severities, the report, and DataValidationError on errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import CheckSeverity, DataConfig, ValidationConfig, load_config
from pipeline.data import ingest
from pipeline.data.validate import ValidationReport, validate
from pipeline.errors import DataValidationError, PipelineError
from tests.conftest import PARAMS
from tests.unit.conftest import LABELS, frame

PER_LABEL = 10  # train rows per label: the default checks.min_train_count

CHECK_NAMES = [
    "column 'text' present",
    "column 'label' present",
    "column 'split' present",
    "dataset not empty",
    "text not null",
    "text not blank",
    "text length within bounds",
    "label not null",
    "label in declared set",
    "at least two labels",
    "split not null",
    "split names known",
    "every split present",
    "every label in train with min count",
    "class balance",
    "no duplicate texts in a split",
    "no train text in validation/test",
    "no conflicting labels",
]


def good_rows() -> list[tuple]:
    """A frame that passes every check with the default settings: 10 train rows per label, all splits."""
    rows = []
    for label in LABELS:
        rows += [(f"a {label} sentence number {i} for training", label, "train") for i in range(PER_LABEL)]
        rows += [(f"a held out {label} sentence", label, "validation"), (f"a test {label} sentence", label, "test")]
    return rows


ROWS = len(good_rows())


def run(
    df: pd.DataFrame, tmp_path: Path, settings: ValidationConfig | None = None, labels: list[str] = LABELS
) -> ValidationReport:
    with pytest.raises(DataValidationError) as info:
        validate(df, labels, tmp_path / "reports", settings)
    report = info.value.report
    assert isinstance(report, ValidationReport)
    assert not report.passed
    assert "data validation failed" in str(info.value)
    return report


def with_rows(extra: list[tuple]) -> pd.DataFrame:
    return frame(good_rows() + extra)


def without(predicate: Callable[[tuple], bool]) -> pd.DataFrame:
    return frame([r for r in good_rows() if not predicate(r)])


# (case id, frame factory, {expected failed check name: unexpected count}, offending texts in examples)
ERROR_CASES = [
    ("missing label column", lambda: frame(good_rows()).drop(columns="label"), {"column 'label' present": 0}, []),
    (
        "blank texts",
        lambda: with_rows([("", "joy", "train"), (" \t ", "fear", "test")]),
        {"text not blank": 2},
        ["", " \t "],
    ),
    ("null text", lambda: with_rows([(None, "joy", "validation")]), {"text not null": 1}, [None]),
    ("null label", lambda: with_rows([("who knows", None, "train")]), {"label not null": 1}, ["who knows"]),
    (
        "unknown label",
        lambda: with_rows([("i am furious", "rage", "train")]),
        {"label in declared set": 1},
        ["i am furious"],
    ),
    ("missing test split", lambda: without(lambda r: r[2] == "test"), {"every split present": 1}, []),
    (
        "unknown split name",
        lambda: with_rows([("held out text", "joy", "holdout")]),
        {"split names known": 1},
        ["held out text"],
    ),
    ("null split", lambda: with_rows([("orphan row", "joy", None)]), {"split not null": 1}, ["orphan row"]),
    (
        "label rare in train",
        lambda: without(lambda r: r[1] == "love" and r[2] == "train" and r[0][-14] in "01234"),
        {"every label in train with min count": 1},
        [],
    ),
    (
        "label absent from train",
        lambda: without(lambda r: r[1] == "fear" and r[2] == "train"),
        {"every label in train with min count": 1},
        [],
    ),
    ("empty dataset", lambda: frame([]), {"dataset not empty": 0, "every split present": 3}, []),
]


def test_clean_frame_passes_and_writes_reports(tmp_path: Path):
    report = validate(frame(good_rows()), LABELS, tmp_path / "reports")
    assert report.passed and report.failed == [] and report.warnings == []
    assert report.rows == ROWS
    assert [c.name for c in report.checks] == CHECK_NAMES
    assert report.summary() == f"all {len(CHECK_NAMES)} data checks passed on {ROWS} rows"
    md = (tmp_path / "reports" / "validation_report.md").read_text()
    assert "Verdict: **PASS**" in md
    assert "| text length within bounds | pass | 0 | rows | warning | 2..2000 characters |  |" in md
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert saved["passed"] is True and saved["errors"] == 0 and saved["warnings"] == 0
    assert len(saved["checks"]) == len(CHECK_NAMES)
    assert saved["settings"] == {
        "min_text_chars": 2,
        "max_text_chars": 2000,
        "min_train_count": 10,
        "max_imbalance_ratio": 20.0,
    }


def test_default_severities():
    report_levels = {
        "columns": "error",
        "not_empty": "error",
        "text_not_null": "error",
        "text_not_blank": "error",
        "text_length": "warning",
        "label_not_null": "error",
        "label_in_set": "error",
        "min_labels": "error",
        "split_not_null": "error",
        "split_known": "error",
        "splits_present": "error",
        "label_min_count": "error",
        "duplicates": "warning",
        "leakage": "warning",
        "conflicts": "warning",
        "class_balance": "warning",
    }
    from pipeline.data.validate import severities

    assert severities(ValidationConfig()) == report_levels
    assert severities(load_config(PARAMS, [], environ={}).checks) == report_levels  # params.yaml keeps the defaults


def test_shipped_sample_passes_without_warnings(tmp_path: Path):
    snap = ingest.normalize(ingest.read_source(DataConfig(source="sample")))
    report = validate(snap, LABELS, tmp_path / "r")
    assert report.passed and report.warnings == []


@pytest.mark.parametrize("case, build, expected, offending", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_data_raises_with_named_checks_and_counts(tmp_path: Path, case, build, expected, offending):
    """Every error case stops the run; exactly the expected checks fail, with the right unexpected counts."""
    report = run(build(), tmp_path)
    assert {c.name: c.unexpected_count for c in report.failed} == expected
    assert all(c.severity == "error" and c.status == "FAIL" for c in report.failed)
    shown = [ex.get("text") for c in report.failed for ex in c.examples if c.unit == "rows"]
    for text in offending:
        assert text in shown, f"{text!r} not among the example rows {shown}"


def test_missing_text_column_is_named(tmp_path: Path):
    report = run(frame(good_rows()).drop(columns="text"), tmp_path)
    assert [(c.name, c.detail) for c in report.failed] == [("column 'text' present", "columns found: label, split")]
    # checks on the missing column (and the derived text checks) are skipped rather than repeated
    assert not any(c.name.startswith("text ") or "duplicate" in c.name for c in report.checks)


def test_failure_details_match_the_check(tmp_path: Path):
    """GX returns results grouped by column: each detail must still belong to its own named check."""
    df = frame([r for r in good_rows() if r[2] != "test"] + [("x is here", "rage", "train")])
    report = run(df, tmp_path)
    details = {c.name: c.detail for c in report.failed}
    assert details == {
        "label in declared set": 'unexpected values: "rage"',
        "every split present": "missing split(s): test",
    }
    assert [c.name for c in report.checks] == CHECK_NAMES  # report order is suite order


def test_label_counts_detail_and_examples(tmp_path: Path):
    df = without(
        lambda r: (
            (r[1] == "fear" and r[2] == "train") or (r[1] == "love" and r[2] == "train" and r[0][-14] in "0123456")
        )
    )
    check = run(df, tmp_path).check("every label in train with min count")
    assert (check.unexpected_count, check.unit) == (2, "labels")
    assert check.detail == "fewer than 10 train rows: love (3), fear (0)"
    assert check.examples == [{"label": "love", "train_count": 3}, {"label": "fear", "train_count": 0}]
    off = validate(
        df,
        LABELS,
        tmp_path / "r3",
        ValidationConfig(severity=CheckSeverity(label_min_count="warning", class_balance="off")),
    )
    assert [c.name for c in off.warnings] == ["every label in train with min count"]
    assert "class balance" not in [c.name for c in off.checks]


def test_single_class_is_refused(tmp_path: Path):
    df = frame([(f"happy sentence {i}", "joy", s) for i, s in enumerate(["train"] * 10 + ["validation", "test"])])
    report = run(df, tmp_path, labels=["joy"])
    assert [(c.name, c.unit, c.detail) for c in report.failed] == [
        ("at least two labels", "labels", "1 label(s): joy; a classifier needs two or more")
    ]


# --- warnings: reported, the run goes on ---------------------------------------------------------------------

DUP = "a joy sentence number 0 for training"
WARNING_CASES = [
    (
        "duplicates",
        lambda: with_rows([(DUP, "joy", "train"), (f"  {DUP} ", "joy", "train")]),
        {"no duplicate texts in a split": 2},
    ),
    (
        "leakage",
        lambda: with_rows([(DUP, "joy", "test"), (DUP, "joy", "validation")]),
        {"no train text in validation/test": 2},
    ),
    (
        "conflicting labels",
        lambda: with_rows([(DUP, "anger", "train")]),
        {"no duplicate texts in a split": 1, "no conflicting labels": 2},
    ),
    (
        "text too short and too long",
        lambda: with_rows([("k", "joy", "train"), ("x" * 2001, "fear", "test")]),
        {"text length within bounds": 2},
    ),
    (
        "class imbalance",
        lambda: with_rows([(f"so much joy {i}", "joy", "train") for i in range(200)]),
        {"class balance": 5},
    ),
]


@pytest.mark.parametrize("case, build, expected", WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_warnings_are_reported_and_do_not_stop_the_run(tmp_path: Path, case, build, expected):
    report = validate(build(), LABELS, tmp_path / "reports")
    assert report.passed and report.failed == []
    assert {c.name: c.unexpected_count for c in report.warnings} == expected
    assert all(c.status == "warn" and c.severity == "warning" for c in report.warnings)
    summary = report.summary()
    assert summary.startswith(f"data checks passed on {len(build())} rows with {len(expected)} warning(s)")
    for name, count in expected.items():
        assert f"  ! {name} ({count} " in summary
    md = (tmp_path / "reports" / "validation_report.md").read_text()
    assert f"Verdict: **PASS with {len(expected)} warning(s)**" in md
    for name, count in expected.items():
        assert f"| {name} | warn | {count} |" in md and f"## {name}: examples" in md


def test_warning_details(tmp_path: Path):
    conflicts = validate(with_rows([(DUP, "anger", "train"), ("  " + DUP, "joy", "train")]), LABELS, tmp_path / "a")
    check = conflicts.check("no conflicting labels")
    assert check.unexpected_count == 3 and check.detail == "1 text(s) carry different labels within a split"
    assert sorted(ex["label"] for ex in check.examples) == ["anger", "joy", "joy"]
    leak = validate(with_rows([(DUP, "joy", "test")]), LABELS, tmp_path / "b").check("no train text in validation/test")
    assert leak.detail == "rows whose text is also in train: test 1"
    assert leak.examples == [{"text": DUP, "label": "joy", "split": "test", "row": ROWS}]
    length = validate(with_rows([("x" * 5000, "fear", "test")]), LABELS, tmp_path / "c").check(
        "text length within bounds"
    )
    assert length.detail == "1 text(s) outside 2..2000 characters (shortest 5000, longest 5000)"
    balance = validate(
        with_rows([(f"so much joy {i}", "joy", "train") for i in range(200)]), LABELS, tmp_path / "d"
    ).check("class balance")
    assert balance.detail == (
        "rarest label 'sadness' has 10 train rows, most common 'joy' 210 (ratio 1:21.0, allowed 1:20)"
    )


def test_severity_is_configurable(tmp_path: Path):
    df = with_rows([(DUP, "joy", "test")])
    strict = ValidationConfig(severity=CheckSeverity(leakage="error"))
    report = run(df, tmp_path, strict)
    assert [(c.name, c.unexpected_count) for c in report.failed] == [("no train text in validation/test", 1)]
    off = validate(df, LABELS, tmp_path / "off", ValidationConfig(severity=CheckSeverity(leakage="off")))
    assert "no train text in validation/test" not in [c.name for c in off.checks] and off.warnings == []
    blank_warns = validate(
        with_rows([("   ", "joy", "train")]),
        LABELS,
        tmp_path / "blank",
        ValidationConfig(severity=CheckSeverity(text_not_blank="warning")),
    )
    assert [(c.name, c.unexpected_count) for c in blank_warns.warnings] == [("text not blank", 1)]


def test_fixed_errors_cannot_be_downgraded():
    with pytest.raises(PipelineError, match="checks.severity.label_in_set"):
        load_config(PARAMS, ["checks.severity.label_in_set=warning"], environ={})
    with pytest.raises(PipelineError, match="checks.severity.leakage"):
        load_config(PARAMS, ["checks.severity.leakage=fatal"], environ={})
    assert load_config(PARAMS, ["checks.severity.leakage=error"], environ={}).checks.severity.leakage == "error"


def test_failures_and_warnings_together(tmp_path: Path):
    report = run(with_rows([("i am furious", "rage", "train"), (DUP, "joy", "test")]), tmp_path)
    summary = report.summary()
    assert summary.startswith(
        f"1 of {len(CHECK_NAMES)} data checks failed on {ROWS + 2} rows:\n"
        '  x label in declared set (1 rows): unexpected values: "rage"'
    )
    assert "  and 1 warning(s):\n  ! no train text in validation/test (1 rows)" in summary


# --- multi-label ---------------------------------------------------------------------------------------------


def multi_rows() -> list[tuple]:
    rows = [(text, [label], split) for text, label, split in good_rows()]
    rows[0] = (rows[0][0], ["sadness", "joy"], "train")
    return rows


def test_multi_label_frame_passes(tmp_path: Path):
    report = validate(frame(multi_rows()), LABELS, tmp_path / "r")
    assert report.passed and report.warnings == []


@pytest.mark.parametrize(
    "case, extra, expected",
    [
        (
            "unknown label inside a list",
            [("mixed feelings", ["joy", "rage", "fury"], "train")],
            {"label in declared set": 1},
        ),
        ("empty label list", [("no feelings at all", [], "validation")], {"label not null": 1}),
        ("missing label", [("no label here", None, "test")], {"label not null": 1}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_multi_label_bad_labels(tmp_path: Path, case, extra, expected):
    report = run(frame(multi_rows() + extra), tmp_path)
    assert {c.name: c.unexpected_count for c in report.failed} == expected
    (check,) = report.failed
    assert check.examples == [{"text": extra[0][0], "label": extra[0][1], "split": extra[0][2], "row": ROWS}]


def test_multi_label_counts_each_label_and_compares_sets(tmp_path: Path):
    rows = [(text, label, split) for text, label, split in multi_rows() if not (label == ["love"] and split == "train")]
    rows += [(f"love and joy {i}", ["joy", "love"], "train") for i in range(PER_LABEL)]
    rows += [
        ("love and joy 0", ["love", "joy"], "train"),  # same set in another order: a duplicate, no conflict
        ("love and joy 1", ["love"], "train"),
    ]  # another set: a conflict
    report = validate(frame(rows), LABELS, tmp_path / "r")
    assert report.passed
    assert {c.name: c.unexpected_count for c in report.warnings} == {
        "no duplicate texts in a split": 2,
        "no conflicting labels": 2,
    }


# --- report details ------------------------------------------------------------------------------------------


def test_markdown_report_is_written_and_names_failed_checks(tmp_path: Path):
    report = run(with_rows([("", "joy", "train"), ("i am furious", "rage", "test")]), tmp_path)
    md = (tmp_path / "reports" / "validation_report.md").read_text()
    assert "Verdict: **FAIL**" in md
    for check in report.failed:
        assert f"| {check.name} | FAIL | {check.unexpected_count} | rows | error |" in md
        assert f"## {check.name}: examples" in md
    assert '"text": "i am furious"' in md
    assert report.summary().startswith(f"2 of {len(CHECK_NAMES)} data checks failed on {ROWS + 2} rows")
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert saved["passed"] is False and saved["errors"] == 2
    assert sorted(c["name"] for c in saved["checks"] if c["status"] == "FAIL") == sorted(c.name for c in report.failed)


def test_examples_include_the_offending_row(tmp_path: Path):
    report = run(with_rows([("i am furious", "rage", "validation")]), tmp_path)
    examples = [ex for c in report.failed for ex in c.examples]
    assert {"text": "i am furious", "label": "rage", "split": "validation", "row": ROWS} in examples


def test_examples_are_capped(tmp_path: Path):
    report = run(with_rows([(f"angry {i}", "rage", "train") for i in range(12)]), tmp_path)
    (check,) = report.failed
    assert check.unexpected_count == 12
    assert len(check.examples) == 5


def test_examples_survive_a_non_default_index(tmp_path: Path):
    df = with_rows([("i am furious", "rage", "train")])
    df.index = df.index + 100
    report = run(df, tmp_path)
    assert "i am furious" in [ex["text"] for c in report.failed for ex in c.examples]


def test_source_without_label_column_is_reported_as_missing_column(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("sentence,split\nhello,train\nbye,validation\nhi,test\n")
    snap = ingest.normalize(ingest.read_source(DataConfig(source=str(path), text_column="sentence")))
    report = run(snap, tmp_path)
    assert "column 'label' present" in [c.name for c in report.failed]


# --- validate_stage ------------------------------------------------------------------------------------------


def test_validate_stage_needs_labels(tmp_path: Path):
    from pipeline.stages import validate_stage

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "data.labels=null"], environ={})
    with pytest.raises(PipelineError, match="no labels"):
        validate_stage(cfg, frame([("x", "joy", "validation")]))


def test_validate_stage_infers_labels_and_passes_the_check_settings(tmp_path: Path):
    from pipeline.stages import validate_stage

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "data.labels=null", "checks.min_train_count=1"], environ={})
    df = frame([("aa", "joy", "train"), ("bb", "fear", "train"), ("cc", "joy", "validation"), ("dd", "fear", "test")])
    labels, report = validate_stage(cfg, df)
    assert labels == ["fear", "joy"]
    assert report.passed
    assert (tmp_path / "artifacts" / "reports" / "validation_report.md").exists()
    # a label only seen outside train is not in the inferred set, so it fails validation
    with pytest.raises(DataValidationError):
        validate_stage(cfg, pd.concat([df, frame([("ee", "love", "test")])], ignore_index=True))
    # the default minimum count (10 train rows per label) refuses this tiny set
    strict = load_config(PARAMS, [f"project_dir={tmp_path}", "data.labels=null"], environ={})
    with pytest.raises(DataValidationError, match="every label in train with min count"):
        validate_stage(strict, df)
