"""pipeline.validate: the Great Expectations suite, its report, and DataValidationError on any failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline import ingest
from pipeline.config import DataConfig, load_config
from pipeline.errors import DataValidationError, PipelineError
from pipeline.validate import ValidationReport, validate
from tests.conftest import PARAMS
from tests.unit.conftest import LABELS, frame, good_rows

def run(df: pd.DataFrame, tmp_path: Path) -> ValidationReport:
    with pytest.raises(DataValidationError) as info:
        validate(df, LABELS, tmp_path / "reports")
    report = info.value.report
    assert isinstance(report, ValidationReport)
    assert not report.passed
    assert "data validation failed" in str(info.value)
    return report


def with_rows(extra: list[tuple]) -> pd.DataFrame:
    return frame(good_rows() + extra)


def replace(index: int, **values) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        df = frame(good_rows())
        for column, value in values.items():
            df.loc[index, column] = value
        return df
    return build


# (case id, frame factory, {expected failed check name: unexpected count}, offending texts in examples)
CASES = [
    ("missing label column", lambda: frame(good_rows()).drop(columns="label"), {"column 'label' present": 0}, []),
    ("blank texts", lambda: with_rows([("", "joy", "train"), (" \t ", "fear", "test")]), {"text not blank": 2},
     ["", " \t "]),
    ("null text", lambda: with_rows([(None, "joy", "validation")]), {"text not null": 1}, [None]),
    ("unknown label", lambda: with_rows([("i am furious", "rage", "train")]), {"label in declared set": 1},
     ["i am furious"]),
    ("missing test split", lambda: frame([r for r in good_rows() if r[2] != "test"]), {"every split present": 0}, []),
    ("unknown split name", lambda: with_rows([("held out text", "joy", "holdout")]), {"split names known": 1},
     ["held out text"]),
    ("empty dataset", lambda: frame([]), {"dataset not empty": 0, "every split present": 0}, []),
]


def test_clean_frame_passes_and_writes_reports(tmp_path: Path):
    report = validate(frame(good_rows()), LABELS, tmp_path / "reports")
    assert report.passed and report.failed == []
    assert report.rows == len(good_rows())
    names = [c.name for c in report.checks]
    assert names == ["column 'text' present", "column 'label' present", "column 'split' present", "dataset not empty",
                     "text not null", "text not blank", "label not null", "split not null",
                     "label in declared set", "split names known", "every split present"]
    assert report.summary() == f"all 11 data checks passed on {len(good_rows())} rows"
    md = (tmp_path / "reports" / "validation_report.md").read_text()
    assert "Verdict: **PASS**" in md
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert saved["passed"] is True and len(saved["checks"]) == 11


def test_shipped_sample_passes(tmp_path: Path):
    snap = ingest.normalize(ingest.read_source(DataConfig(source="sample")))
    assert validate(snap, LABELS, tmp_path / "r").passed


@pytest.mark.parametrize("case, build, expected, offending", CASES, ids=[c[0] for c in CASES])
def test_bad_data_raises_with_unexpected_counts(tmp_path: Path, case, build, expected, offending):
    """Every bad case stops the run; the failed checks carry the right unexpected-row counts."""
    report = run(build(), tmp_path)
    assert sorted(c.unexpected_count for c in report.failed) == sorted(expected.values())
    shown = [ex["text"] for c in report.failed for ex in c.examples]
    for text in offending:
        assert text in shown, f"{text!r} not among the example rows {shown}"


@pytest.mark.parametrize("case, build, expected, offending", CASES, ids=[c[0] for c in CASES])
def test_bad_data_report_names_the_failed_check(tmp_path: Path, case, build, expected, offending):
    report = run(build(), tmp_path)
    assert {c.name: c.unexpected_count for c in report.failed} == expected


def test_missing_text_column_is_named(tmp_path: Path):
    report = run(frame(good_rows()).drop(columns="text"), tmp_path)
    assert [(c.name, c.detail) for c in report.failed] == [("column 'text' present", "columns found: label, split")]
    # checks on the missing column are skipped rather than repeated
    assert not any(c.name.startswith("text ") for c in report.checks)


def test_failure_details_match_the_check(tmp_path: Path):
    """The human-readable detail belongs to the named check (missing splits listed, unexpected values shown)."""
    df = frame([r for r in good_rows() if r[2] != "test"] + [("x", "rage", "train")])
    report = run(df, tmp_path)
    details = {c.name: c.detail for c in report.failed}
    assert details == {"label in declared set": 'unexpected values: "rage"', "every split present": "missing split(s): test"}


def test_markdown_report_is_written_and_names_failed_checks(tmp_path: Path):
    report = run(with_rows([("", "joy", "train"), ("i am furious", "rage", "test")]), tmp_path)
    md_path = tmp_path / "reports" / "validation_report.md"
    md = md_path.read_text()
    assert "Verdict: **FAIL**" in md
    for check in report.failed:
        assert f"| {check.name} | FAIL | {check.unexpected_count} |" in md
        assert f"## {check.name}: examples" in md
    assert '"text": "i am furious"' in md
    summary = report.summary()
    assert summary.startswith(f"{len(report.failed)} of 11 data checks failed on {len(good_rows()) + 2} rows")
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert saved["passed"] is False
    assert sorted(c["name"] for c in saved["checks"] if not c["passed"]) == sorted(c.name for c in report.failed)


def test_examples_include_the_offending_row(tmp_path: Path):
    report = run(with_rows([("i am furious", "rage", "validation")]), tmp_path)
    examples = [ex for c in report.failed for ex in c.examples]
    assert {"text": "i am furious", "label": "rage", "split": "validation", "row": len(good_rows())} in examples


def test_examples_are_capped(tmp_path: Path):
    report = run(with_rows([(f"angry {i}", "rage", "train") for i in range(12)]), tmp_path)
    (check,) = report.failed
    assert check.unexpected_count == 12
    assert len(check.examples) == 5


def test_null_split_fails_validation(tmp_path: Path):
    run(with_rows([("orphan row", "joy", None)]), tmp_path)


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


def test_validate_stage_needs_labels(tmp_path: Path):
    from pipeline.stages import validate_stage

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "data.labels=null"], environ={})
    with pytest.raises(PipelineError, match="no labels"):
        validate_stage(cfg, frame([("x", "joy", "validation")]))


def test_validate_stage_infers_labels_from_train(tmp_path: Path):
    from pipeline.stages import validate_stage

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "data.labels=null"], environ={})
    df = frame([("a", "joy", "train"), ("b", "fear", "train"), ("c", "joy", "validation"), ("d", "fear", "test")])
    labels, report = validate_stage(cfg, df)
    assert labels == ["fear", "joy"]
    assert report.passed
    assert (tmp_path / "artifacts" / "reports" / "validation_report.md").exists()
    # a label only seen outside train is not in the inferred set, so it fails validation
    with pytest.raises(DataValidationError):
        validate_stage(cfg, pd.concat([df, frame([("e", "love", "test")])], ignore_index=True))
