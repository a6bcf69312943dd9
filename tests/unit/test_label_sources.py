"""Labels in the shapes real files hold them (pipeline/data/labels.py, through ingest):

decorated names (``\\t:: joy``), one 0/1 column per label (SemEval-2018 E-c, read from ../shared/data as
published) with ``data.empty_labels``, and columns of numeric scores turned into labels by ``data.label_bins``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import stages
from pipeline.config import CleanConfig, Config, DataConfig, load_config
from pipeline.data import ingest
from pipeline.data.clean import clean
from pipeline.data.encode import label_set
from pipeline.data.labels import LabelReport, bin_scores, is_scores, labels_from_columns, strip_decoration
from pipeline.errors import PipelineError
from tests.conftest import PARAMS, SEMEVAL_LABELS, SHARED_DATA
from tests.synthetic_text import THINGS, WORDS

SEMEVAL = SHARED_DATA / "semeval2018-ec"
SEMEVAL_FILES = {"train": "2018-E-c-En-train.txt", "dev": "2018-E-c-En-dev.txt", "test": "2018-E-c-En-test-gold.txt"}
SEMEVAL_ROWS = {"train": 6838, "validation": 886, "test": 3259}
SEMEVAL_EMPTY = {"train": 204, "validation": 14, "test": 75}  # rows whose 11 indicators are all 0


def config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(PARAMS, [f"project_dir={tmp_path}", "data.dvc_track=false", *overrides], environ={})


def semeval_dir(tmp_path: Path) -> Path:
    """The three published files under split names (links to them, never copies)."""
    folder = tmp_path / "semeval"
    folder.mkdir()
    for split, name in SEMEVAL_FILES.items():
        (folder / f"{split}.tsv").symlink_to(SEMEVAL / name)
    return folder


def semeval_cfg(tmp_path: Path, *overrides: str) -> Config:
    return config(
        tmp_path, f"data.source={semeval_dir(tmp_path)}", "data.text_column=Tweet", "data.labels=null", *overrides
    )


# --- decoration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (":: joy", "joy"),
        ("joy.", "joy"),
        ("#joy", "joy"),
        ("[fear]", "fear"),
        ("« surprise »", "surprise"),
        ("n/a", "n/a"),  # inner punctuation is part of the name
        ("-1", "-1"),  # no letter: the sign is the label, so -1 and 1 stay apart
        (":)", ":)"),
    ],
)
def test_strip_decoration(raw: str, expected: str) -> None:
    assert strip_decoration(raw) == expected


def test_tweet_file_with_decorated_labels_ingests_clean_labels(tmp_path: Path) -> None:
    """Lines ``id<TAB>text<TAB>:: joy``: labels come out as ``joy`` and the change is shown before -> after."""
    emotions = ["joy", "fear", "anger", "sadness"]
    lines = [
        f"{1000 + i}\tthe {thing} left me &quot;{WORDS[emotion]}&quot; &amp; quiet\t:: {emotion}\n"
        for i, (thing, emotion) in enumerate((t, e) for t in THINGS[:15] for e in emotions)
    ]
    source = tmp_path / "tweets.tsv"
    source.write_text("".join(lines))
    cfg = config(
        tmp_path,
        f"data.source={source}",
        "data.header=false",
        "data.text_column=col2",
        "data.label_column=col3",
        "data.labels=null",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    assert sorted(snapshot.frame["label"].unique()) == sorted(emotions)
    report = snapshot.report
    assert report is not None
    assert report.labels.undecorated == {f":: {e}": e for e in emotions}
    assert "label decoration stripped: ':: joy' -> 'joy'" in "\n".join(report.notes())
    ingest.write_report(snapshot, tmp_path / "ingest.json")
    assert json.loads((tmp_path / "ingest.json").read_text())["labels"]["undecorated"][":: fear"] == "fear"
    # the same file's HTML entities are repaired by cleaning, before the model sees them
    texts = clean(snapshot.frame, CleanConfig()).frame["text"]
    assert not texts.str.contains("&quot;|&amp;").any() and texts.str.contains('"').all()


def test_label_map_keys_match_decorated_labels() -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "label": [":: happy", "sad."]})
    cfg = DataConfig(labels=None, label_map={"happy": "joy"})
    from pipeline.data.labels import label_frame

    out, report = label_frame(frame, cfg)
    assert out["label"].tolist() == ["joy", "sad"]
    assert report.mapped == {"happy -> joy": 1}


# --- multi-hot indicator columns ----------------------------------------------------------------------------


def test_semeval_auto_columns_ingest_as_published(tmp_path: Path) -> None:
    """SemEval-2018 E-c exactly as published (TSV, header, CRLF): 11 labels + neutral, multi-label, all rows."""
    cfg = semeval_cfg(tmp_path, "data.label_columns=auto")
    assert cfg.data.multi_label is True  # set by label_columns, not refused
    snapshot, _ = stages.ingest_stage(cfg)
    frame = snapshot.frame
    assert snapshot.split_counts() == SEMEVAL_ROWS
    assert label_set(frame, None) == sorted([*SEMEVAL_LABELS, "neutral"])
    assert frame["label"].map(lambda v: isinstance(v, list) and len(v) >= 1).all()
    neutral = frame["label"].map(lambda v: v == ["neutral"])
    assert neutral.groupby(frame["split"]).sum().to_dict() == SEMEVAL_EMPTY
    first = frame.iloc[0]  # 2017-En-21441: anticipation, optimism, trust
    assert first["text"].startswith("“Worry is a down payment") and first["label"] == [
        "anticipation",
        "optimism",
        "trust",
    ]
    report = snapshot.report
    assert report is not None and report.labels.label_columns == SEMEVAL_LABELS
    assert report.labels.empty_rows == sum(SEMEVAL_EMPTY.values())
    notes = "\n".join(report.notes())
    assert "labels from 11 indicator columns" in notes and "no column 'label'" not in notes


def test_semeval_explicit_columns_with_drop(tmp_path: Path) -> None:
    cfg = semeval_cfg(tmp_path, f"data.label_columns=[{', '.join(SEMEVAL_LABELS)}]", "data.empty_labels=drop")
    snapshot, _ = stages.ingest_stage(cfg)
    assert snapshot.split_counts() == {s: n - SEMEVAL_EMPTY[s] for s, n in SEMEVAL_ROWS.items()}
    assert label_set(snapshot.frame, None) == SEMEVAL_LABELS


def test_semeval_empty_rows_refused_when_asked(tmp_path: Path) -> None:
    cfg = semeval_cfg(tmp_path, "data.label_columns=auto", "data.empty_labels=error")
    with pytest.raises(PipelineError, match=r"293 row\(s\) have no label set .*data.empty_labels=neutral"):
        stages.ingest_stage(cfg)


@pytest.mark.slow
def test_semeval_columns_train_and_evaluate_as_multi_label(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Through the real stages (tiny model, 3 steps): validation passes, the model is multi-label over 12 labels,
    evaluation scores every test row, and the model folder repairs served texts as cleaning did."""
    from pipeline.model.predict import Predictor

    cfg = semeval_cfg(
        tmp_path,
        "data.label_columns=auto",
        f"model.name={tiny_model_dir}",
        "model.max_length=64",
        "train.max_steps=3",
        "train.device=cpu",
        "evaluate.bootstrap_samples=100",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    labels, report = stages.validate_stage(cfg, snapshot.frame)
    assert report.passed and sorted(labels) == sorted([*SEMEVAL_LABELS, "neutral"])
    prepared, changes = stages.prepare_stage(cfg, snapshot.frame, labels)
    assert prepared.label_map.multi_label is True and prepared.targets("train").shape[1] == 12
    assert changes.loc["train", "repaired_literal_newlines"] > 300  # SemEval's literal \n, repaired in cleaning
    stages.train_stage(cfg, prepared)
    evaluation, _ = stages.evaluate_stage(cfg, prepared)
    assert evaluation.multi_label and len(evaluation.metrics) > 0
    predictor = Predictor(stages.Layout.of(cfg).model)
    assert predictor.multi_label and predictor.labels == prepared.label_map.labels
    raw = "Hahaha!\\nHe is a bully &amp; a clown"
    assert predictor.prepare([raw]) == ["Hahaha! He is a bully & a clown"]


def test_indicator_columns_in_any_reader_type_and_subset() -> None:
    frame = pd.DataFrame(
        {"text": ["a", "b", "c"], "Anger": [1, 0, 0], "fear": ["1", "1", "0"], "joy": [0.0, 1.0, 0.0], "id": [7, 8, 9]}
    )
    report = LabelReport()
    out = labels_from_columns(frame, ["anger", "fear"], "neutral", report)  # names match case-insensitively
    assert out["label"].tolist() == [["Anger", "fear"], ["fear"], ["neutral"]]
    auto = labels_from_columns(frame, "auto", "drop", LabelReport())
    assert auto["label"].tolist() == [["Anger", "fear"], ["fear", "joy"]]  # id (7, 8, 9) is not an indicator
    numbered = pd.DataFrame({"text": ["a", "b"], 0: [1, 0], 1: [1, 1]})  # a reader's integer column names
    assert labels_from_columns(numbered, "auto", "error", LabelReport())["label"].tolist() == [["0", "1"], ["1"]]


def test_indicator_column_errors_name_the_problem() -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "anger": ["1", "0"], "score": ["0.5", "1"]})
    with pytest.raises(PipelineError, match="names 'fear', which the data lacks; its columns: text, anger, score"):
        labels_from_columns(frame, ["anger", "fear"], "neutral", LabelReport())
    with pytest.raises(
        PipelineError, match=r"'score' is not a 0/1 indicator column: 1 row\(s\) .*'0.5' \(data row 1\)"
    ):
        labels_from_columns(frame, ["anger", "score"], "neutral", LabelReport())
    with pytest.raises(PipelineError, match=r"auto found 1 column\(s\) of 0/1 values"):
        labels_from_columns(frame, "auto", "neutral", LabelReport())


def test_label_columns_config() -> None:
    assert DataConfig(label_columns="auto").multi_label is True
    assert DataConfig(label_columns=["a", "b"], multi_label=False).multi_label is True
    assert DataConfig().label_columns is None and DataConfig().empty_labels == "neutral"
    with pytest.raises(PipelineError, match="once each"):
        config(Path("."), "data.label_columns=[a, a]")
    with pytest.raises(PipelineError, match="exclude each other"):
        config(Path("."), "data.label_columns=auto", "data.label_bins={low: [0, 1]}")
    with pytest.raises(PipelineError, match="data.empty_labels"):
        config(Path("."), "data.empty_labels=zero")


# --- numeric scores -----------------------------------------------------------------------------------------

BINS = {"low": [1.0, 2.5], "mid": [2.5, 3.5], "high": [3.5, 5.0]}


def vad_file(tmp_path: Path) -> Path:
    """A valence/arousal/dominance file: decimals from 1 to 5, 20 rows per third of the range."""
    scores = [1.2, 2.0, 2.49, 2.5, 3.0, 3.49, 3.5, 4.2, 5.0] * 20
    rows = [f"the {THINGS[i % len(THINGS)]} number {i},{v},{round(6 - v, 2)},3.1" for i, v in enumerate(scores)]
    path = tmp_path / "vad.csv"
    path.write_text("text,valence,arousal,dominance\n" + "\n".join(rows) + "\n")
    return path


def test_score_column_without_bins_is_refused_with_a_proposal(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"data.source={vad_file(tmp_path)}", "data.label_column=valence", "data.labels=null")
    with pytest.raises(PipelineError) as err:
        stages.ingest_stage(cfg)
    message = str(err.value)
    assert "the label column 'valence' holds numeric scores (1.2 to 5, 9 distinct values)" in message
    assert "--set 'data.label_bins={low: [1.2, 2.47], mid: [2.47, 3.73], high: [3.73, 5]}'" in message
    assert not (tmp_path / "data").exists()  # a refused input changes nothing


def test_score_column_with_bins_trains_on_named_ranges(tmp_path: Path) -> None:
    bins = "{low: [1, 2.5], mid: [2.5, 3.5], high: [3.5, 5]}"
    cfg = config(
        tmp_path,
        f"data.source={vad_file(tmp_path)}",
        "data.label_column=valence",
        "data.labels=null",
        f"data.label_bins={bins}",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    frame = snapshot.frame
    assert frame["label"].value_counts().to_dict() == {"low": 60, "mid": 60, "high": 60}
    assert snapshot.report is not None and snapshot.report.labels.binned == {"low": 60, "mid": 60, "high": 60}
    assert (
        "scores in 'valence' binned into labels (data.label_bins): low 60, mid 60, high 60" in snapshot.report.notes()
    )


@pytest.mark.parametrize(
    "score, label", [(1.0, "low"), (2.49, "low"), (2.5, "mid"), (3.49, "mid"), (3.5, "high"), (5.0, "high")]
)
def test_bin_edges(score: float, label: str) -> None:
    frame = pd.DataFrame({"label": [str(score)]})
    assert bin_scores(frame, "valence", BINS, LabelReport())["label"].tolist() == [label]


def test_bins_refuse_scores_outside_and_non_numbers() -> None:
    with pytest.raises(PipelineError, match=r"1 score\(s\) in 'valence' fall in none of the ranges.*: 5.5"):
        bin_scores(pd.DataFrame({"label": ["1.5", "5.5"]}), "valence", BINS, LabelReport())
    with pytest.raises(PipelineError, match="label_bins is set but the label column 'emotion' holds .* 'joy'"):
        bin_scores(pd.DataFrame({"label": ["1.5", "joy"]}), "emotion", BINS, LabelReport())


def test_ids_and_names_are_not_scores() -> None:
    assert is_scores(pd.Series(["1.5", "2.25", None]))
    assert not is_scores(pd.Series(["0", "1", "5"]))  # whole numbers: label ids (data.label_names)
    assert not is_scores(pd.Series(["joy", "1.5"]))
    assert not is_scores(pd.Series([["a"], ["b"]]))


@pytest.mark.parametrize(
    "bins, problem",
    [
        ("{low: [1, 3], high: [2.5, 5]}", "ranges overlap"),
        ("{low: [3, 1]}", "low < high"),
        ("{low: [1]}", "low < high"),
        ("{}", "at least one range"),
    ],
)
def test_label_bins_config_refuses_bad_ranges(bins: str, problem: str) -> None:
    with pytest.raises(PipelineError, match=problem):
        config(Path("."), f"data.label_bins={bins}")
