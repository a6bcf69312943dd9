"""pipeline.data.ingest: every source format into one normalized, deterministic snapshot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import DataConfig, load_config
from pipeline.data import ingest
from pipeline.errors import PipelineError
from pipeline.registry.versioning import content_hash
from tests.conftest import PARAMS, SHARED_DATA, copy_sample, require

EMOTION = SHARED_DATA / "emotion"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def counts(frame: pd.DataFrame) -> dict[str, int]:
    return frame["split"].value_counts().to_dict()


# --- dair-ai text format and split file names ------------------------------------------------------------


def test_text_dir_with_blank_lines_and_val_name(tmp_path: Path):
    d = tmp_path / "src"
    write(d / "train.txt", "i feel good;joy\n\ni feel bad;sadness\n")
    write(d / "val.txt", "\ni am afraid;fear\n   \n")  # starts with a blank line, like the real val.txt
    write(d / "test.txt", "i love it;love\n")
    raw = ingest.read_source(DataConfig(source=str(d)))
    assert counts(raw) == {"train": 2, "validation": 1, "test": 1}
    assert raw.loc[raw["split"] == "validation", ["text", "label"]].values.tolist() == [["i am afraid", "fear"]]
    assert raw["text"].str.strip().ne("").all()


def test_dev_is_validation(tmp_path: Path):
    d = tmp_path / "src"
    for name in ("train", "dev", "test"):
        write(d / f"{name}.txt", f"text of {name};joy\n")
    raw = ingest.read_source(DataConfig(source=str(d)))
    assert sorted(raw["split"]) == ["test", "train", "validation"]
    assert raw.loc[raw["split"] == "validation", "text"].tolist() == ["text of dev"]


def test_text_label_is_after_the_last_semicolon(tmp_path: Path):
    path = write(tmp_path / "train.txt", "a; b ;c; joy \nno separator here\n")
    raw = ingest.read_table(path, DataConfig())
    assert raw.to_dict("records") == [{"text": "a; b ;c", "label": "joy"}, {"text": "no separator here", "label": None}]


def test_shared_emotion_dataset_row_counts():
    require(EMOTION.exists(), str(EMOTION))
    raw = ingest.read_source(DataConfig(source=str(EMOTION)))
    assert counts(raw) == {"train": 16000, "validation": 2000, "test": 2000}
    assert set(raw["label"]) == {"sadness", "joy", "love", "anger", "fear", "surprise"}
    assert raw["text"].notna().all() and raw["text"].str.strip().ne("").all()


def test_sample_source_is_the_shipped_data():
    raw = ingest.read_source(DataConfig(source="sample"))
    assert counts(raw) == {"train": 480, "validation": 120, "test": 120}
    assert ingest.sample_data_dir().joinpath("train.txt").is_file()


def test_two_files_for_one_split_is_an_error(tmp_path: Path):
    d = tmp_path / "src"
    write(d / "val.txt", "x;joy\n")
    write(d / "validation.txt", "y;joy\n")
    with pytest.raises(PipelineError, match="two files for split 'validation'"):
        ingest.read_source(DataConfig(source=str(d)))


def test_directory_without_split_files_is_an_error(tmp_path: Path):
    d = tmp_path / "src"
    write(d / "notes.txt", "x;joy\n")
    with pytest.raises(PipelineError, match="no split files"):
        ingest.read_source(DataConfig(source=str(d)))


def test_other_files_in_the_directory_are_ignored(tmp_path: Path):
    d = tmp_path / "src"
    write(d / "train.txt", "x;joy\n")
    write(d / "README.md", "# not data\n")
    write(d / "labels.txt", "joy\n")
    assert counts(ingest.read_source(DataConfig(source=str(d)))) == {"train": 1}


# --- tabular formats and custom column names ---------------------------------------------------------------


def test_csv_single_file_with_custom_columns(tmp_path: Path):
    path = write(
        tmp_path / "all.csv",
        'sentence,emotion,part,extra\n"hello, world",joy,train,1\nso sad,sadness,VAL,2\nboo,fear, test ,3\n',
    )
    cfg = DataConfig(source=str(path), text_column="sentence", label_column="emotion", split_column="part")
    snap = ingest.normalize(ingest.read_source(cfg))
    assert snap.columns.tolist() == ["text", "label", "split"]
    assert snap.to_dict("records") == [
        {"text": "hello, world", "label": "joy", "split": "train"},
        {"text": "so sad", "label": "sadness", "split": "validation"},
        {"text": "boo", "label": "fear", "split": "test"},
    ]


def test_tsv_directory_with_custom_columns(tmp_path: Path):
    d = tmp_path / "src"
    for split in ("train", "valid", "test"):
        write(d / f"{split}.tsv", f"emo\tutterance\njoy\t{split} one, with comma\nfear\t{split} two\n")
    cfg = DataConfig(source=str(d), text_column="utterance", label_column="emo")
    snap = ingest.normalize(ingest.read_source(cfg))
    assert counts(snap) == {"train": 2, "validation": 2, "test": 2}
    assert snap.iloc[0].to_dict() == {"text": "train one, with comma", "label": "joy", "split": "train"}


def test_jsonl_single_file(tmp_path: Path):
    rows = [
        {"t": "héllo 😀", "l": "joy", "s": "train"},
        {"t": "42", "l": "anger", "s": "test"},
        {"t": "x", "l": "fear", "s": "dev"},
    ]
    path = write(tmp_path / "data.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    cfg = DataConfig(source=str(path), text_column="t", label_column="l", split_column="s")
    snap = ingest.normalize(ingest.read_source(cfg))
    # rows come out in split order, texts stay strings (no number conversion)
    assert snap.to_dict("records") == [
        {"text": "héllo 😀", "label": "joy", "split": "train"},
        {"text": "x", "label": "fear", "split": "validation"},
        {"text": "42", "label": "anger", "split": "test"},
    ]


def test_parquet_single_file(tmp_path: Path):
    path = tmp_path / "data.parquet"
    pd.DataFrame(
        {"review": ["a", "b", "c"], "y": ["joy", "love", "fear"], "fold": ["train", "validation", "test"]}
    ).to_parquet(path)
    cfg = DataConfig(source=str(path), text_column="review", label_column="y", split_column="fold")
    snap = ingest.normalize(ingest.read_source(cfg))
    assert snap.to_dict("records") == [
        {"text": "a", "label": "joy", "split": "train"},
        {"text": "b", "label": "love", "split": "validation"},
        {"text": "c", "label": "fear", "split": "test"},
    ]


def test_declared_format_overrides_suffix(tmp_path: Path):
    path = write(tmp_path / "data.dat", "text,label,split\nhi,joy,train\n")
    assert ingest.read_source(DataConfig(source=str(path), format="csv")).to_dict("records") == [
        {"text": "hi", "label": "joy", "split": "train"}
    ]


def test_unknown_suffix_needs_a_declared_format(tmp_path: Path):
    path = write(tmp_path / "data.dat", "text,label\nhi,joy\n")
    with pytest.raises(PipelineError, match="data.format"):
        ingest.read_source(DataConfig(source=str(path)))


# --- failures ----------------------------------------------------------------------------------------------


def test_hf_source_fails_fast_offline():
    started = time.monotonic()
    with pytest.raises(PipelineError) as info:
        ingest.read_source(DataConfig(source="hf:some/id"))
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "hf:some/id" in message
    assert "hub" in message.lower() or "network" in message.lower()


@pytest.mark.parametrize(
    "name, payload",
    [
        ("train.txt", "caf\xe9;joy\n"),
        ("data.csv", "text,label\ncaf\xe9,joy\n"),
        ("data.tsv", "text\tlabel\ncaf\xe9\tjoy\n"),
        ("data.jsonl", '{"text": "caf\xe9", "label": "joy"}\n'),
    ],
)
def test_non_utf8_bytes_are_a_pipeline_error_naming_utf8(tmp_path: Path, name: str, payload: str):
    path = tmp_path / name
    path.write_bytes(payload.encode("latin-1"))
    with pytest.raises(PipelineError, match="UTF-8") as info:
        ingest.read_source(DataConfig(source=str(path)))
    assert str(path) in str(info.value)


def test_empty_csv_is_a_pipeline_error(tmp_path: Path):
    path = write(tmp_path / "data.csv", "")
    with pytest.raises(PipelineError, match="empty"):
        ingest.read_source(DataConfig(source=str(path)))


@pytest.mark.parametrize("name", ["train.txt", "data.jsonl"])
def test_empty_text_or_jsonl_file_is_a_pipeline_error(tmp_path: Path, name: str):
    path = write(tmp_path / name, "")
    with pytest.raises(PipelineError, match="empty"):
        ingest.read_source(DataConfig(source=str(path)))


def test_unreadable_parquet_is_a_pipeline_error(tmp_path: Path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(PipelineError, match="cannot read"):
        ingest.read_source(DataConfig(source=str(path)))


def test_missing_source_is_a_pipeline_error(tmp_path: Path):
    with pytest.raises(PipelineError, match="does not exist") as info:
        ingest.read_source(DataConfig(source=str(tmp_path / "nowhere")))
    assert "nowhere" in str(info.value)


def test_utf8_bom_is_not_part_of_the_first_text(tmp_path: Path):
    path = tmp_path / "train.txt"
    path.write_bytes("\ufeffi feel good;joy\ni feel bad;sadness\n".encode("utf-8"))
    raw = ingest.read_table(path, DataConfig())
    assert raw["text"].tolist() == ["i feel good", "i feel bad"]


def test_csv_texts_that_look_like_na_stay_text(tmp_path: Path):
    path = write(tmp_path / "data.csv", "text,label,split\nNone,joy,train\nNA,sadness,validation\nnull,fear,test\n")
    snap = ingest.normalize(ingest.read_source(DataConfig(source=str(path))))
    assert snap["text"].tolist() == ["None", "NA", "null"]


# --- normalize and the snapshot ----------------------------------------------------------------------------


def test_normalize_canonical_splits_order_and_strings():
    raw = pd.DataFrame(
        {
            "text": ["t1", 7, "t3", "t4"],
            "label": ["joy", "fear", None, "joy"],
            "split": ["TEST", " dev ", "train", "holdout"],
            "other": [1, 2, 3, 4],
        }
    )
    out = ingest.normalize(raw)
    assert out.columns.tolist() == ["text", "label", "split"]
    assert out["split"].tolist() == ["train", "validation", "test", "holdout"]  # unknown names kept, last
    assert out["text"].tolist() == ["t3", "7", "t1", "t4"]
    assert out["label"].tolist() == [None, "fear", "joy", "joy"]
    assert raw["split"].tolist() == ["TEST", " dev ", "train", "holdout"]  # input untouched


def test_snapshot_bytes_are_deterministic(tmp_path: Path):
    src = tmp_path / "src"
    write(src / "train.txt", "b;joy\na;sadness\ncafé ☕;love\n")
    write(src / "val.txt", "\nc;fear\n")
    write(src / "test.txt", "d;anger\n")
    cfg = DataConfig(source=str(src))
    first = ingest.ingest(cfg, tmp_path / "snap1")
    second = ingest.ingest(cfg, tmp_path / "snap2")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert content_hash(first.path) == content_hash(second.path)
    again = ingest.ingest(cfg, tmp_path / "snap1")  # re-ingest over an existing snapshot
    assert again.path.read_bytes() == second.path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "snap1").iterdir()) == [ingest.SNAPSHOT_NAME]
    lines = first.path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"text": "b", "label": "joy", "split": "train"}
    assert "café ☕" in first.path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    assert first.split_counts() == {"train": 3, "validation": 1, "test": 1}


def test_snapshot_round_trip(tmp_path: Path):
    cfg = DataConfig(source="sample")
    snap = ingest.ingest(cfg, tmp_path / "data")
    back = ingest.read_snapshot(tmp_path / "data")
    pd.testing.assert_frame_equal(back, snap.frame)


def test_read_snapshot_missing_is_a_pipeline_error(tmp_path: Path):
    with pytest.raises(PipelineError, match="emotion ingest"):
        ingest.read_snapshot(tmp_path / "data")


def test_relative_source_in_the_params_file_resolves_against_project_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A relative data.source written in params.yaml is the project's; one typed with --set is the shell's (see
    test_config.py)."""
    from pipeline.stages import ingest_stage

    project = tmp_path / "project"
    write(project / "mydata" / "train.txt", "x;joy\n")
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("source: sample", "source: mydata", 1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(params, [f"project_dir={project}", "data.dvc_track=false"], environ={})
    assert cfg.data.source == "mydata"
    snapshot, _ = ingest_stage(cfg)
    assert snapshot.split_counts() == {"train": 1}


def test_write_snapshot_refuses_a_folder_it_did_not_write(tmp_path: Path):
    folder = tmp_path / "mlflow"
    write(folder / "mlflow.db", "the registry")
    with pytest.raises(PipelineError, match="mlflow.db"):
        ingest.write_snapshot(pd.DataFrame({"text": ["a"], "label": ["joy"], "split": ["train"]}), folder)
    assert (folder / "mlflow.db").read_text() == "the registry"


def test_write_snapshot_replaces_its_own_snapshot(tmp_path: Path):
    first = ingest.write_snapshot(pd.DataFrame({"text": ["a"], "label": ["joy"]}), tmp_path / "data")
    again = ingest.write_snapshot(pd.DataFrame({"text": ["b"], "label": ["fear"]}), tmp_path / "data")
    assert first == again and '"b"' in again.read_text()


def test_a_failed_dvc_add_puts_the_previous_snapshot_back(tmp_path: Path):
    from pipeline.stages import ingest_validated

    project = tmp_path / "project"  # not a DVC project: dvc add fails after the swap
    project.mkdir()
    first, _, _, _ = ingest_validated(load_config(PARAMS, [f"project_dir={project}", "data.dvc_track=false"], {}))
    before = first.path.read_bytes()
    changed = copy_sample(tmp_path / "changed")
    with (changed / "train.txt").open("a") as fh:
        fh.write("i am feeling wonderfully content this evening;joy\n")
    with pytest.raises(PipelineError, match="not a DVC project"):
        ingest_validated(load_config(PARAMS, [f"project_dir={project}", f"data.source={changed}"], {}))
    assert first.path.read_bytes() == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("data")) == ["data"]
