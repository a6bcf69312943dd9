"""Cross-validation folds (stratified, seeded, never touching test), the mean/std table, and the cv settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.encode import LabelMap, PreparedData
from pipeline.errors import PipelineError
from pipeline.evaluation import cross_validation as cv
from tests.conftest import PARAMS

LABELS = ["joy", "anger", "fear"]


def single_label(counts: dict[str, int], test_rows: int = 30, seed: int = 0) -> PreparedData:
    """Imbalanced single-label data: ``counts`` rows per label in the pool, 80/20 train/validation."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(n, LABELS.index(name)) for name, n in counts.items()])
    rng.shuffle(ids)
    frame = pd.DataFrame({"text": [f"pool text {i}" for i in range(len(ids))], "label_id": ids})
    frame["label"] = frame["label_id"].map(dict(enumerate(LABELS)))
    cut = int(len(frame) * 0.8)
    test = pd.DataFrame({"text": [f"test text {i}" for i in range(test_rows)], "label_id": np.arange(test_rows) % 3})
    test["label"] = test["label_id"].map(dict(enumerate(LABELS)))
    splits = {"train": frame.iloc[:cut].reset_index(drop=True), "validation": frame.iloc[cut:].reset_index(drop=True)}
    return PreparedData(splits | {"test": test}, LabelMap(LABELS))


def multi_label(rows: int = 400, seed: int = 0) -> PreparedData:
    """Multi-label rows with label frequencies of roughly 60%, 25% and 8%."""
    rng = np.random.default_rng(seed)
    hot = rng.random((rows, 3)) < np.array([0.6, 0.25, 0.08])
    hot[hot.sum(axis=1) == 0, 0] = True
    ids = [sorted(np.flatnonzero(row).tolist()) for row in hot]
    frame = pd.DataFrame({"text": [f"multi {i}" for i in range(rows)], "label_ids": ids})
    frame["label"] = frame["label_ids"].map(lambda v: [LABELS[i] for i in v])
    test = frame.iloc[:20].assign(text=[f"held out {i}" for i in range(20)])
    splits = {"train": frame.iloc[:320].reset_index(drop=True), "validation": frame.iloc[320:].reset_index(drop=True)}
    return PreparedData(splits | {"test": test.reset_index(drop=True)}, LabelMap(LABELS, multi_label=True))


def test_single_label_folds_keep_class_proportions_and_cover_the_pool_once():
    data = single_label({"joy": 300, "anger": 90, "fear": 30})
    folds = cv.make_folds(data, 5, seed=7)
    overall = cv.pool(data)["label"].value_counts(normalize=True)
    held_out = [text for fold in folds for text in fold.data.texts("test")]
    assert sorted(held_out) == sorted(cv.pool(data)["text"])  # every pool row held out exactly once
    for fold in folds:
        shares = fold.data.splits["test"]["label"].value_counts(normalize=True)
        assert (shares - overall).abs().max() < 0.02
        fit, select, test = (set(fold.data.texts(s)) for s in ("train", "validation", "test"))
        assert not (fit & select or fit & test or select & test)
        assert len(fit | select | test) == 420
        assert len(select) == pytest.approx(len(fit | select) * 0.2, abs=2)  # the validation split's share


def test_test_rows_are_never_in_any_fold():
    data = single_label({"joy": 60, "anger": 40, "fear": 20})
    test_texts = set(data.texts("test"))
    for fold in cv.make_folds(data, 4, seed=1):
        assert not test_texts & {t for split in fold.data.splits.values() for t in split["text"]}


def test_folds_are_deterministic_by_seed():
    data = single_label({"joy": 60, "anger": 40, "fear": 20})

    def texts(seed: int) -> list[list[str]]:
        return [f.data.texts(s) for f in cv.make_folds(data, 3, seed) for s in ("train", "validation", "test")]

    assert texts(3) == texts(3)
    assert texts(3) != texts(4)


def test_multi_label_folds_balance_every_labels_count():
    data = multi_label()
    folds = cv.make_folds(data, 4, seed=0)
    pool_counts = np.array([sum(i in ids for ids in cv.pool(data)["label_ids"]) for i in range(3)])
    for fold in folds:
        assert fold.data.label_map.multi_label
        counts = fold.data.targets("test").sum(axis=0)
        assert np.abs(counts - pool_counts / 4).max() <= 2  # iterative stratification: within a row or two
        assert not set(data.texts("test")) & set(fold.data.texts("train"))


def test_more_folds_than_a_class_has_rows_names_the_class_and_counts():
    data = single_label({"joy": 50, "anger": 20, "fear": 4})
    with pytest.raises(PipelineError) as info:
        cv.make_folds(data, 5, seed=0)
    message = str(info.value)
    assert "'fear'" in message and "fear 4" in message and "joy 50" in message and "cv_folds=5" in message
    assert len(cv.make_folds(data, 4, seed=0)) == 4


def test_multi_label_rare_label_is_refused_too():
    data = multi_label(rows=60)
    rarest = int(data.targets("train").sum(axis=0).argmin())
    with pytest.raises(PipelineError, match=LABELS[rarest]):
        cv.make_folds(data, 40, seed=0)


def test_mean_std_table_and_files(tmp_path: Path):
    folds = [
        {"accuracy": 0.8, "macro_f1": 0.7, "f1_joy": 0.9},
        {"accuracy": 0.9, "macro_f1": 0.6, "f1_joy": 0.7},
        {"accuracy": 0.7, "macro_f1": 0.8, "f1_joy": 0.8},
    ]
    result = cv.CrossValidation(folds, seed=42, rows=[10, 10, 9])
    assert result.mean == pytest.approx({"accuracy": 0.8, "macro_f1": 0.7, "f1_joy": 0.8})
    assert result.std == pytest.approx({"accuracy": 0.1, "macro_f1": 0.1, "f1_joy": 0.1})  # sample std (ddof=1)
    assert result.tracking_metrics()["cv_macro_f1_mean"] == pytest.approx(0.7)
    assert result.tracking_metrics()["cv_f1_joy_std"] == pytest.approx(0.1)
    assert result.headline() == "macro-F1 0.7000 ± 0.1000, accuracy 0.8000 ± 0.1000 over 3 folds"
    paths = result.write(tmp_path, tmp_path / "reports")
    saved = json.loads((tmp_path / "cv.json").read_text())
    assert saved["folds"] == 3 and saved["per_fold"] == folds and saved["held_out_rows"] == [10, 10, 9]
    assert pd.read_csv(tmp_path / "reports" / "cv_folds.csv", index_col="fold").loc[2, "accuracy"] == 0.9
    lines = paths[2].read_text().splitlines()
    assert lines[0] == "| fold | macro_f1 | accuracy | f1_joy |"
    assert lines[-2:] == ["| mean | 0.7000 | 0.8000 | 0.8000 |", "| std | 0.1000 | 0.1000 | 0.1000 |"]


def test_point_metrics_drop_interval_ends():
    assert cv.point_metrics({"accuracy": 0.5, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.6}) == {"accuracy": 0.5}


@pytest.mark.parametrize(
    ("folds", "always", "official", "expected"),
    [(0, False, False, False), (3, False, False, True), (3, False, True, False), (3, True, True, True)],
)
def test_cv_applies_to_sources_without_a_split_unless_always(folds: int, always: bool, official: bool, expected: bool):
    assert cv.applies(folds, always, official) is expected


def test_cv_settings_are_validated():
    cfg = load_config(PARAMS, ["evaluate.cv_folds=5", "evaluate.cv_always=true"], environ={})
    assert (cfg.evaluate.cv_folds, cfg.evaluate.cv_always) == (5, True)
    with pytest.raises(PipelineError, match=r"evaluate\.cv_folds.*1 fold is no cross-validation"):
        load_config(PARAMS, ["evaluate.cv_folds=1"], environ={})
    with pytest.raises(PipelineError, match=r"evaluate\.cv_folds"):
        load_config(PARAMS, ["evaluate.cv_folds=-2"], environ={})


def test_model_card_has_a_cross_validation_section_only_when_run():
    from pipeline.evaluation import model_card
    from pipeline.evaluation.gate import GateVerdict

    metrics = {"accuracy": 0.8, "macro_f1": 0.7}
    result = cv.CrossValidation([{"accuracy": 0.8, "macro_f1": 0.6}, {"accuracy": 0.9, "macro_f1": 0.8}], seed=0)
    card = model_card.build(["joy"], {}, metrics, GateVerdict(True, [], []), {}, None, result)
    assert "### Cross-validation\nmacro-F1 0.7000 ± 0.1414, accuracy 0.8500 ± 0.0707 over 2 folds" in card
    assert "Cross-validation" not in model_card.build(["joy"], {}, metrics, GateVerdict(True, [], []), {}, None)


def test_ingest_records_whether_it_drew_the_split(tmp_path: Path):
    from pipeline.config import DataConfig
    from pipeline.data import ingest

    unsplit = tmp_path / "rows.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(30)], "label": ["joy", "fear", "anger"] * 10}).to_csv(
        unsplit, index=False
    )
    drawn = ingest.ingest(DataConfig(source=str(unsplit), labels=LABELS), tmp_path / "a")
    official = ingest.ingest(DataConfig(), tmp_path / "b")  # the sample: train/validation/test files
    assert drawn.report is not None and drawn.report.split_assigned
    assert official.report is not None and not official.report.split_assigned
    assert drawn.report.to_dict()["split_assigned"] is True  # in ingest_report.json too
