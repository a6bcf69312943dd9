"""One test per kind of bad input, each with its exact outcome, through the real ingest -> validate -> clean path.

Outcomes: refused at ingest (PipelineError naming the problem), refused by validation (DataValidationError whose
report names exactly the failed checks with their unexpected counts), or accepted with warnings and cleaned (the
exact per-split table of changes). Small synthetic files are written to tmp_path; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import Config, load_config
from pipeline.data import clean, ingest
from pipeline.data.clean import CHANGE_COLUMNS
from pipeline.data.validate import ValidationReport
from pipeline.errors import DataValidationError, PipelineError
from pipeline.stages import validate_stage
from tests.conftest import PARAMS
from tests.unit.conftest import LABELS

PER_LABEL = {"train": 10, "validation": 2, "test": 2}  # 10 train rows per label: the default minimum count
BASE_IN = {split: n * len(LABELS) for split, n in PER_LABEL.items()}


def base_rows(labels: list[str] = LABELS) -> list[tuple]:
    """A clean dataset: unique texts, every label in every split."""
    return [
        (f"{split} text {i} about {label}", label, split)
        for split, n in PER_LABEL.items()
        for label in labels
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[tuple], columns=("text", "label", "split"), sep: str = ",") -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False, sep=sep)
    return path


def write_dair_ai(folder: Path, rows: list[tuple], sep: str = ";") -> Path:
    """The dair-ai layout: one ``text;label`` file per split."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in PER_LABEL:
        lines = [f"{text}{sep}{label}" for text, label, s in rows if s == split]
        (folder / f"{split}.txt").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return folder


def config(tmp_path: Path, source: Path, *extra: str) -> Config:
    return load_config(
        PARAMS, [f"project_dir={tmp_path}", f"data.source={source}", "data.dvc_track=false", *extra], environ={}
    )


def snapshot(cfg: Config) -> pd.DataFrame:
    return ingest.normalize(ingest.read_source(cfg.data, Path(cfg.project_dir)), cfg.data)


def refused(cfg: Config) -> dict[str, int]:
    """Validation stops the run: {failed check: unexpected count}, checked against the exception and the report."""
    frame = snapshot(cfg)
    with pytest.raises(DataValidationError) as info:
        validate_stage(cfg, frame)
    report = info.value.report
    assert isinstance(report, ValidationReport) and not report.passed
    md = (cfg.artifacts / "reports" / "validation_report.md").read_text()
    for check in report.failed:
        assert check.name in str(info.value)
        assert f"| {check.name} | FAIL | {check.unexpected_count} |" in md
    return {c.name: c.unexpected_count for c in report.failed}


def accepted(cfg: Config) -> tuple[ValidationReport, clean.CleanResult]:
    """Validation lets the data through (maybe with warnings); then clean it, leaving the snapshot untouched."""
    frame = snapshot(cfg)
    before = frame.copy(deep=True)
    _, report = validate_stage(cfg, frame)
    assert report.passed
    result = clean.clean(frame, cfg.clean)
    pd.testing.assert_frame_equal(frame, before)
    return report, result


def warnings_of(report: ValidationReport) -> dict[str, int]:
    return {c.name: c.unexpected_count for c in report.warnings}


def table(extra_in: dict[str, int] | None = None, **changes: dict[str, int]) -> dict[str, dict[str, int]]:
    """The expected changes table: the base rows plus extra_in, the given counts, every other count 0."""
    out = {}
    for split, n in BASE_IN.items():
        row = dict.fromkeys(CHANGE_COLUMNS, 0) | {"rows_in": n + (extra_in or {}).get(split, 0)}
        row |= {column: per_split.get(split, 0) for column, per_split in changes.items()}
        row["rows_out"] = row["rows_in"] - sum(v for k, v in row.items() if k.startswith("dropped_"))
        out[split] = row
    return out


def test_clean_base_data_passes_untouched(tmp_path: Path):
    report, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", base_rows())))
    assert report.warnings == []
    assert result.changes.to_dict("index") == table()


# --- refused at ingest: unreadable files ----------------------------------------------------------------------


def test_empty_file(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"")
    with pytest.raises(PipelineError, match=r"data\.csv is empty: it holds no rows"):
        snapshot(config(tmp_path, path))


def test_header_only_csv(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("text,label,split\n")
    with pytest.raises(PipelineError, match=r"data\.csv is empty: it holds no rows"):
        snapshot(config(tmp_path, path))


def test_non_utf8_bytes(tmp_path: Path):
    folder = write_dair_ai(tmp_path / "src", base_rows())
    with (folder / "train.txt").open("ab") as fh:
        fh.write("i feel so blas\u00e9 today;sadness\n".encode("latin-1"))
    with pytest.raises(PipelineError, match=r"train\.txt is not UTF-8 text .* re-encode it as UTF-8"):
        snapshot(config(tmp_path, folder))


# --- refused by validation ------------------------------------------------------------------------------------


def test_missing_column(tmp_path: Path):
    rows = [(text, split) for text, _, split in base_rows()]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows, columns=("text", "split")))
    assert refused(cfg) == {"column 'label' present": 0}


def test_wrong_delimiter_csv_read_as_tsv(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", base_rows()), "data.format=tsv")
    assert refused(cfg) == {"column 'text' present": 0, "column 'label' present": 0, "column 'split' present": 0}


def test_wrong_delimiter_dair_ai_with_commas(tmp_path: Path):
    """``text,label`` lines in the ``text;label`` format: no label is found on any line."""
    cfg = config(tmp_path, write_dair_ai(tmp_path / "src", base_rows(), sep=","))
    assert refused(cfg) == {"label not null": sum(BASE_IN.values()), "every label in train with min count": 6}


def test_blank_texts(tmp_path: Path):
    rows = base_rows() + [("", "joy", "train"), ("   ", "fear", "validation")]  # "" is read as a missing text
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows))
    assert refused(cfg) == {"text not null": 1, "text not blank": 1}


def test_blank_texts_cleaned_when_downgraded_to_warnings(tmp_path: Path):
    rows = base_rows() + [("", "joy", "train"), ("   ", "fear", "validation"), (" \t ", "joy", "test")]
    cfg = config(
        tmp_path,
        write_csv(tmp_path / "data.csv", rows),
        "checks.severity.text_not_null=warning",
        "checks.severity.text_not_blank=warning",
    )
    report, result = accepted(cfg)
    assert warnings_of(report) == {"text not null": 1, "text not blank": 2}
    assert result.changes.to_dict("index") == table(
        {"train": 1, "validation": 1, "test": 1},
        normalized={"validation": 1, "test": 1},
        dropped_empty={"train": 1, "validation": 1, "test": 1},
    )


def test_nan_labels(tmp_path: Path):
    rows = base_rows() + [("no label on this one", None, "train"), ("nor on this one", None, "test")]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows))
    assert refused(cfg) == {"label not null": 2}


def test_null_text(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", base_rows() + [(None, "joy", "validation")]))
    assert refused(cfg) == {"text not null": 1}


def test_unknown_label(tmp_path: Path):
    rows = base_rows() + [("i am bored out of my mind", "boredom", "train")]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows))
    assert refused(cfg) == {"label in declared set": 1}


def test_label_missing_from_training(tmp_path: Path):
    rows = [r for r in base_rows() if not (r[1] == "surprise" and r[2] == "train")]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows))
    frame = snapshot(cfg)
    with pytest.raises(DataValidationError) as info:
        validate_stage(cfg, frame)
    (check,) = info.value.report.failed
    assert (check.name, check.unexpected_count, check.unit) == ("every label in train with min count", 1, "labels")
    assert check.detail == "fewer than 10 train rows: surprise (0)"


def test_label_below_minimum_count(tmp_path: Path):
    rows = [r for r in base_rows() if not (r[1] == "love" and r[2] == "train" and int(r[0].split()[2]) >= 4)]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows))
    assert refused(cfg) == {"every label in train with min count": 1}
    relaxed = config(tmp_path, tmp_path / "data.csv", "checks.min_train_count=4")
    assert accepted(relaxed)[0].warnings == []


def test_missing_split(tmp_path: Path):
    folder = write_dair_ai(tmp_path / "src", base_rows())
    (folder / "test.txt").unlink()
    cfg = config(tmp_path, folder)
    frame = snapshot(cfg)
    with pytest.raises(DataValidationError) as info:
        validate_stage(cfg, frame)
    assert {c.name: c.unexpected_count for c in info.value.report.failed} == {"every split present": 1}
    assert info.value.report.failed[0].detail == "missing split(s): test"


def test_unknown_split_name(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", base_rows() + [("kept aside", "joy", "holdout")]))
    assert refused(cfg) == {"split names known": 1}


def test_single_class(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", base_rows(["joy"])), "data.labels=null")
    assert refused(cfg) == {"at least two labels": 0}


def test_single_class_with_declared_labels(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", base_rows(["joy"])))
    assert refused(cfg) == {"every label in train with min count": 5}


def test_extreme_text_length_warns_or_is_refused(tmp_path: Path):
    rows = base_rows() + [("x" * 5000, "joy", "train"), ("k", "fear", "test")]
    path = write_csv(tmp_path / "data.csv", rows)
    report, result = accepted(config(tmp_path, path))
    assert warnings_of(report) == {"text length within bounds": 2}
    assert result.changes.to_dict("index") == table({"train": 1, "test": 1})  # cleaning keeps them
    assert refused(config(tmp_path, path, "checks.severity.text_length=error")) == {"text length within bounds": 2}


# --- accepted with warnings, then cleaned ---------------------------------------------------------------------


def test_duplicates(tmp_path: Path):
    rows = base_rows() + [
        ("train text 0 about joy", "joy", "train"),
        ("  train text 0 about joy ", "joy", "train"),
        ("validation text 0 about joy", "joy", "validation"),
    ]
    report, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows)))
    assert warnings_of(report) == {"no duplicate texts in a split": 3}
    assert result.changes.to_dict("index") == table(
        {"train": 2, "validation": 1}, normalized={"train": 1}, dropped_duplicates={"train": 2, "validation": 1}
    )


def test_duplicates_kept_when_configured(tmp_path: Path):
    rows = base_rows() + [("train text 0 about joy", "joy", "train")]
    _, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows), "clean.drop_duplicates=false"))
    assert result.changes.to_dict("index") == table({"train": 1})


def test_leakage_between_splits(tmp_path: Path):
    rows = base_rows() + [
        ("train text 0 about joy", "joy", "validation"),
        ("train text 1 about fear", "fear", "test"),
        ("TRAIN text 2 about fear", "fear", "test"),
    ]  # differs in case: not the same text
    report, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows)))
    assert warnings_of(report) == {"no train text in validation/test": 2}
    assert result.changes.to_dict("index") == table(
        {"validation": 1, "test": 2}, dropped_leakage={"validation": 1, "test": 1}
    )
    assert "train text 0 about joy" not in result.frame.loc[result.frame["split"] != "train", "text"].tolist()


def test_leakage_refused_when_configured_as_error(tmp_path: Path):
    rows = base_rows() + [("train text 0 about joy", "joy", "test")]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows), "checks.severity.leakage=error")
    assert refused(cfg) == {"no train text in validation/test": 1}


def test_conflicting_labels(tmp_path: Path):
    rows = base_rows() + [
        ("train text 0 about joy", "anger", "train"),  # a tie with joy: both dropped
        ("train text 1 about joy", "anger", "train"),  # anger wins 2:1 over joy ...
        ("train text 1 about joy", "anger", "train"),
    ]  # ... and its copy is a duplicate
    report, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows)))
    assert warnings_of(report) == {"no duplicate texts in a split": 3, "no conflicting labels": 5}
    assert result.changes.to_dict("index") == table(
        {"train": 3}, dropped_conflicts={"train": 3}, dropped_duplicates={"train": 1}
    )
    train = result.frame[result.frame["split"] == "train"]
    assert train.loc[train["text"] == "train text 1 about joy", "label"].tolist() == ["anger"]
    assert "train text 0 about joy" not in train["text"].tolist()


def test_conflicting_labels_all_dropped_by_rule(tmp_path: Path):
    rows = base_rows() + [("train text 1 about joy", "anger", "train"), ("train text 1 about joy", "anger", "train")]
    _, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows), "clean.conflicts=drop"))
    assert result.changes.to_dict("index") == table({"train": 2}, dropped_conflicts={"train": 3})


def test_class_imbalance(tmp_path: Path):
    rows = base_rows() + [(f"another joyful sentence {i}", "joy", "train") for i in range(200)]
    report, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows)))
    assert warnings_of(report) == {"class balance": 5}
    assert result.changes.to_dict("index") == table({"train": 200})


def test_urls_and_mentions_masked(tmp_path: Path):
    rows = base_rows() + [
        ("loving this https://t.co/x1 @sam", "joy", "train"),
        ("@sam thanks", "joy", "test"),
        ("read www.example.com now", "fear", "validation"),
    ]
    _, result = accepted(config(tmp_path, write_csv(tmp_path / "data.csv", rows)))
    assert result.changes.to_dict("index") == table(
        {"train": 1, "validation": 1, "test": 1},
        urls_masked={"train": 1, "validation": 1},
        mentions_masked={"train": 1, "test": 1},
    )
    texts = set(result.frame["text"])
    assert {"loving this <url> @user", "@user thanks", "read <url> now"} <= texts


# --- multi-label ----------------------------------------------------------------------------------------------


def multi_rows() -> list[tuple]:
    rows = base_rows()
    rows[0] = (rows[0][0], "sadness,joy", rows[0][2])
    return rows


def test_multi_label_clean_data_passes(tmp_path: Path):
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", multi_rows()), "data.multi_label=true")
    report, result = accepted(cfg)
    assert report.warnings == [] and result.changes.to_dict("index") == table()
    assert result.frame.loc[0, "label"] == ["sadness", "joy"]


def test_multi_label_unknown_label_inside_a_list(tmp_path: Path):
    rows = multi_rows() + [("mixed feelings about this", "joy,rage,fury", "train")]
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows), "data.multi_label=true")
    frame = snapshot(cfg)
    with pytest.raises(DataValidationError) as info:
        validate_stage(cfg, frame)
    (check,) = info.value.report.failed
    assert (check.name, check.unexpected_count) == ("label in declared set", 1)
    assert check.detail == 'unexpected values: "fury", "rage"'
    assert check.examples[0]["label"] == ["joy", "rage", "fury"]


def test_multi_label_empty_label_list(tmp_path: Path):
    rows = multi_rows() + [("nothing to feel here", ",", "validation")]  # a cell with separators only
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows), "data.multi_label=true")
    assert refused(cfg) == {"label not null": 1}


def test_multi_label_conflicts_compare_label_sets(tmp_path: Path):
    rows = multi_rows() + [
        ("train text 0 about sadness", "joy,sadness", "train"),  # same set, other order
        ("train text 1 about sadness", "sadness,fear", "train"),
    ]  # another set: a tie
    cfg = config(tmp_path, write_csv(tmp_path / "data.csv", rows), "data.multi_label=true")
    report, result = accepted(cfg)
    assert warnings_of(report) == {"no duplicate texts in a split": 2, "no conflicting labels": 2}
    assert result.changes.to_dict("index") == table(
        {"train": 2}, dropped_conflicts={"train": 2}, dropped_duplicates={"train": 1}
    )
