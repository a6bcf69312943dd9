"""Batch scoring of files (pipeline.scoring): formats in and out, ids, probabilities, invalid texts, restarts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import formats
from pipeline.errors import PipelineError
from pipeline.scoring import reader, shards
from pipeline.scoring.job import score_files
from tests.conftest import PARAMS, classifier_folder

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TEXTS = [
    "i feel so happy today",
    "this is the worst day of my life and i cannot stop crying",
    "i love you",
    "why would they do that to me, i am furious",
    "i am scared",
    "wow, i did not expect that at all",
    "the dog ran",
]


def config(tmp_path: Path, *extra: str):
    return load_config(
        PARAMS, [f"project_dir={tmp_path}", "score.precision=fp32", "score.batch_size=3", *extra], environ={}
    )


def write_input(path: Path, texts: list[str], **columns: list) -> Path:
    frame = pd.DataFrame({**columns, "text": texts})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_text("".join(f"{t};joy\n" for t in texts))
    return path


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    return pd.read_json(path, lines=True, dtype=False)


@pytest.mark.parametrize(
    "source, target",
    [("in.csv", "out.parquet"), ("in.jsonl", "out.csv"), ("in.parquet", "out.jsonl"), ("in.txt", "out.parquet")],
)
def test_formats_in_and_out_with_probabilities_of_the_predictor(
    tmp_path: Path, learned_model_dir: Path, source: str, target: str
) -> None:
    from pipeline.model.predict import Predictor

    texts = TEXTS * 3
    inp = write_input(tmp_path / source, texts)
    out = tmp_path / "scores" / target
    summary = score_files(config(tmp_path), [str(inp)], out, str(learned_model_dir), chunk_size=4)

    frame = read_output(out)
    assert list(frame.columns) == [
        "id",
        "text",
        "label",
        *[f"p_{label}" for label in LABELS],
        "model_name",
        "model_version",
    ]
    assert frame["id"].tolist() == list(range(len(texts))) and frame["text"].tolist() == texts
    expected = Predictor(learned_model_dir, precision="fp32", max_length=128).predict_proba(texts)
    np.testing.assert_allclose(frame[[f"p_{label}" for label in LABELS]].to_numpy(), expected, atol=1e-5)
    assert frame["label"].tolist() == [LABELS[i] for i in expected.argmax(axis=1)]
    assert [frame["label"][i] for i in (0, 2, 3, 4)] == ["joy", "love", "anger", "fear"]  # the cue words' emotions
    assert set(frame["model_name"]) == {learned_model_dir.name}
    assert set(frame["model_version"]) == {summary.model_version} and summary.model_version.startswith("folder-")
    assert (summary.rows_read, summary.rows_scored, summary.shards, summary.resumed_shards) == (21, 21, 6, 0)
    assert sum(summary.label_counts.values()) == 21
    assert not shards.parts_dir(out).exists() and sorted(p.name for p in out.parent.iterdir()) == [target]


def test_id_column_glob_and_folder_inputs(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_input(folder / "a.csv", TEXTS[:3], key=["k1", "k2", "k3"])
    write_input(folder / "b.csv", TEXTS[3:], key=[f"k{i}" for i in range(4, 8)])
    cfg = config(tmp_path)
    by_key = read_output(
        Path(score_files(cfg, ["in/*.csv"], tmp_path / "o.parquet", str(tiny_classifier_dir), "key", 2).output)
    )
    assert by_key["id"].tolist() == [f"k{i}" for i in range(1, 8)] and by_key["text"].tolist() == TEXTS
    by_row = read_output(Path(score_files(cfg, ["in"], tmp_path / "r.csv", str(tiny_classifier_dir)).output))
    assert by_row["id"].tolist() == list(range(7))  # no id column: the row number across the files
    with pytest.raises(PipelineError, match="no id column 'nope'"):
        score_files(cfg, ["in"], tmp_path / "x.csv", str(tiny_classifier_dir), "nope")
    with pytest.raises(PipelineError, match="no file matches"):
        score_files(cfg, ["in/*.tsv"], tmp_path / "x.csv", str(tiny_classifier_dir))


def test_multi_label_model_writes_its_decisions(tmp_path: Path, tiny_model_dir: Path) -> None:
    from pipeline.model.calibration import multi_label_decisions
    from pipeline.model.predict import Predictor

    model = classifier_folder(tiny_model_dir, tmp_path / "multi", ["a", "b", "c"], multi_label=True)
    inp = write_input(tmp_path / "in.jsonl", TEXTS)
    for target in ("o.parquet", "o.csv"):
        frame = read_output(Path(score_files(config(tmp_path), [str(inp)], tmp_path / target, str(model)).output))
        predictor = Predictor(model, precision="fp32")
        chosen = multi_label_decisions(predictor.predict_proba(TEXTS), predictor.thresholds)
        expected = [[label for label, on in zip("abc", row) if on] for row in chosen]
        got = frame["labels"].map(lambda v: [x for x in v.split(",") if x] if isinstance(v, str) else list(v))
        assert got.tolist() == expected and {"p_a", "p_b", "p_c", "label"} <= set(frame.columns)


def test_invalid_texts_error_by_default_and_are_skipped_with_a_count_when_allowed(
    tmp_path: Path, tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["fine text", "  ", None, "another one", 7]))
    with pytest.raises(PipelineError, match="id=1 has an empty or missing text"):
        score_files(config(tmp_path), [str(inp)], tmp_path / "o.csv", str(tiny_classifier_dir))
    assert not (tmp_path / "o.csv").exists()
    cfg = config(tmp_path, "checks.severity.text_not_blank=warning", "checks.severity.text_not_null=warning")
    with caplog.at_level(logging.WARNING):
        summary = score_files(cfg, [str(inp)], tmp_path / "o.csv", str(tiny_classifier_dir))
    assert (summary.rows_read, summary.rows_scored, summary.skipped_invalid) == (5, 3, 2)
    assert read_output(tmp_path / "o.csv")["id"].tolist() == [0, 3, 4]
    assert "skipped 2 empty or invalid texts" in caplog.text


def test_records_of_only_blank_cells_are_counted_not_scored(
    tmp_path: Path, tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record `,` is left out as a blank line is, under any text_not_blank severity, and counted: in every chunk
    and after the last row (an empty chunk), also when a resumed run reads its counts back from the shards."""
    inp = tmp_path / "in.csv"
    inp.write_text('text,note\nfine text,\n,\n\n"  ",\nanother one,x\nthird,\n,,\n , \n')
    cfg = config(tmp_path)
    chunks = list(reader.chunks([inp], cfg.data, 3, None))
    assert [(len(chunk), formats.blank_records(chunk)) for chunk in chunks] == [(3, 2), (0, 2)]
    out = tmp_path / "o.csv"
    with caplog.at_level(logging.WARNING):
        summary = score_files(cfg, [str(inp)], out, str(tiny_classifier_dir), chunk_size=3)
    assert (summary.rows_read, summary.rows_scored, summary.skipped_invalid, summary.blank_records) == (3, 3, 0, 4)
    assert read_output(out)["text"].tolist() == ["fine text", "another one", "third"]
    assert "left out 4 records of only blank cells" in caplog.text


def test_a_csv_output_reads_back_as_an_input_without_its_nul_characters(
    tmp_path: Path, learned_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CSV cannot carry NUL (every reader takes such a file for a binary one): the writer removes it and says so; the
    scores are those of the texts as given, which are those of the texts without NUL (the tokenizer drops it)."""
    from pipeline.data.ingest import read_table

    texts = ["i feel\x00 so happy today", "\x00i am scared", "the dog ran"]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"a\x00{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    cfg = config(tmp_path)
    with caplog.at_level(logging.WARNING):
        score_files(cfg, [str(inp)], tmp_path / "o.csv", str(learned_model_dir))
    score_files(cfg, [str(inp)], tmp_path / "o.jsonl", str(learned_model_dir))
    assert "removed NUL characters from 5 cell(s)" in caplog.text
    back = read_table(tmp_path / "o.csv", cfg.data)  # emotion's own CSV reader, as ingest and score use it
    exact = read_output(tmp_path / "o.jsonl")
    assert back["text"].tolist() == [t.replace("\x00", "") for t in texts] and exact["text"].tolist() == texts
    assert back["id"].tolist() == ["a0", "a1", "a2"]
    probabilities = [f"p_{label}" for label in LABELS]
    np.testing.assert_allclose(back[probabilities].to_numpy(float), exact[probabilities].to_numpy(float), atol=1e-6)
    again = score_files(cfg, [str(tmp_path / "o.csv")], tmp_path / "again.parquet", str(learned_model_dir))
    rescored = pd.read_parquet(tmp_path / "again.parquet")
    assert again.rows_scored == 3 and rescored["label"].tolist() == exact["label"].tolist()
    np.testing.assert_allclose(rescored[probabilities].to_numpy(), exact[probabilities].to_numpy(float), atol=1e-5)


def test_a_changed_input_restarts_the_shards(
    tmp_path: Path, tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inp = write_input(tmp_path / "in.csv", TEXTS)
    out = tmp_path / "o.parquet"
    parts = shards.parts_dir(out)
    cfg = config(tmp_path)
    manifest = json.loads(json.dumps({"inputs": [shards.fingerprint(inp.resolve())], "chunk_size": 2}))
    shards.prepare(parts, manifest)
    (parts / "part-00000.parquet").write_text("a shard of an older input")
    with caplog.at_level(logging.WARNING):
        summary = score_files(cfg, [str(inp)], out, str(tiny_classifier_dir), chunk_size=2)
    assert "was scored with other" in caplog.text and summary.resumed_shards == 0
    assert read_output(out)["text"].tolist() == TEXTS


def test_unknown_output_suffix_and_model_are_user_errors(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    inp = write_input(tmp_path / "in.csv", TEXTS)
    with pytest.raises(PipelineError, match="output format"):
        score_files(config(tmp_path), [str(inp)], tmp_path / "o.xlsx", str(tiny_classifier_dir))
    (tmp_path / "o.csv.parts").mkdir()
    with pytest.raises(PipelineError, match="not a scoring run's"):
        score_files(config(tmp_path), [str(inp)], tmp_path / "o.csv", str(tiny_classifier_dir))
    with pytest.raises(PipelineError, match="not a model folder"):
        score_files(config(tmp_path), [str(inp)], tmp_path / "o.csv", "models:/broken")


def semicolon_latin1_csv(path: Path) -> Path:
    """A semicolon CSV in latin-1 with a comment line, a quoted cell holding the delimiter and a malformed row."""
    lines = [
        "# exported by a spreadsheet",
        "id;text;label",
        "a;le café était froid;sadness",
        'b;"déjà vu; again";surprise',
        "c;one;field;too many",  # line 5: 4 fields, the header has 3
        "d;naïve joy;joy",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


@pytest.mark.parametrize("bad_rows", ["skip", "warn"])
def test_csv_input_reads_with_ingests_delimiter_encoding_and_bad_row_policy(
    tmp_path: Path, tiny_classifier_dir: Path, bad_rows: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.data.ingest import read_table

    inp = semicolon_latin1_csv(tmp_path / "in.csv")
    sets = ["data.delimiter=semicolon", "data.encoding=latin-1", "data.comment='#'", f"data.bad_rows={bad_rows}"]
    cfg = config(tmp_path, *sets)
    expected = read_table(inp, cfg.data)
    with caplog.at_level(logging.INFO):
        summary = score_files(cfg, [str(inp)], tmp_path / "out.parquet", str(tiny_classifier_dir), chunk_size=2)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["text"].tolist() == expected["text"].tolist() == ["le café était froid", "déjà vu; again", "naïve joy"]
    assert out["id"].tolist() == ["a", "b", "d"] and summary.rows_read == 3
    assert "1 malformed row(s) left out (data.bad_rows=" + bad_rows + ") at line(s) 5" in caplog.text


def test_csv_malformed_row_is_refused_like_ingest_by_default(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    from pipeline.data.ingest import read_table

    inp = semicolon_latin1_csv(tmp_path / "in.csv")
    cfg = config(tmp_path, "data.encoding=latin-1", "data.comment='#'")  # delimiter auto: sniffed as ingest does
    with pytest.raises(PipelineError) as ingest_error:
        read_table(inp, cfg.data)
    with pytest.raises(PipelineError) as score_error:
        score_files(cfg, [str(inp)], tmp_path / "out.parquet", str(tiny_classifier_dir))
    assert str(score_error.value) == str(ingest_error.value)
    assert "line(s) 5" in str(score_error.value) and "delimiter semicolon" in str(score_error.value)
    with pytest.raises(PipelineError, match="not utf-8 text .*set data.encoding"):
        score_files(
            config(tmp_path, "data.bad_rows=skip"), [str(inp)], tmp_path / "o.parquet", str(tiny_classifier_dir)
        )


def test_texts_with_nothing_visible_are_invalid_like_blank_ones() -> None:
    """The API refuses a text of only NUL or zero-width characters (422); scoring must not answer it either."""
    from pipeline.scoring.local import valid_texts
    from pipeline.scoring.reader import ROW_ID

    chunk = pd.DataFrame({ROW_ID: [1, 2, 3, 4, 5], "text": ["i am glad", "\x00\x00", "\u200b\u2060", "  ", "é"]})
    kept, skipped = valid_texts(chunk, skip_invalid=True)
    assert kept["text"].tolist() == ["i am glad", "é"] and skipped == 3
    with pytest.raises(PipelineError, match=f"{ROW_ID}=2"):
        valid_texts(chunk, skip_invalid=False)
