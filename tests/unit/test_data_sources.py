"""Bring your own data as it really comes: a catalogue of real-world file shapes, each with its exact outcome.

Every shape is written by the test, inspected with `emotion inspect`, and the flags it prints are pasted back
(`--set ...`, through shlex) into the real ingest -> validate -> clean/encode stages. Then: malformed rows under
each policy, label normalisation and mapping, more sources, and the errors a user can cause.
"""

from __future__ import annotations

import codecs
import gzip
import json
import shlex
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import emotion_cli as cli
from pipeline import stages
from pipeline.config import Config, DataConfig, load_config
from pipeline.data import ingest
from pipeline.data.inspect import inspect
from pipeline.errors import DataValidationError, PipelineError
from tests.conftest import PARAMS
from tests.synthetic_text import THINGS as ALL_THINGS
from tests.unit.conftest import LABELS

PER_LABEL = 15  # 80% in train = 12 >= checks.min_train_count (10)
THINGS = ALL_THINGS[:15]


def rows(labels: list[str] = LABELS) -> list[tuple[str, str]]:
    """Unique (text, label) pairs, PER_LABEL per label, interleaved like a real export."""
    return [(f"the {thing} left me feeling {label} today", label) for thing in THINGS for label in labels]


N = len(rows())


def delimited(
    rows_: list[tuple[str, str]], sep: str, header: list[str] | None = None, extra: int = 0, quote_all: bool = False
) -> str:
    """Delimited text with `extra` filler columns after text and label; texts quoted when asked."""
    lines = [sep.join(header + [f"extra_{i}" for i in range(extra)])] if header is not None else []
    for i, (text, label) in enumerate(rows_):
        cell = f'"{text}"' if quote_all else text
        lines.append(sep.join([cell, label, *[str((i * 7 + j) % 10) for j in range(extra)]]))
    return "\n".join(lines) + "\n"


def put(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def with_bad_lines(text: str, bad: dict[int, str]) -> str:
    """Insert malformed lines so that they end up at the given 1-based line numbers."""
    lines = text.splitlines()
    for number in sorted(bad):
        lines.insert(number - 1, bad[number])
    return "\n".join(lines) + "\n"


def xlsx_bytes(frame: pd.DataFrame, sheets: dict[str, pd.DataFrame] | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="data", index=False)
        for name, other in (sheets or {}).items():
            other.to_excel(writer, sheet_name=name, index=False)
    return buffer.getvalue()


def label_tree(root: Path, split_level: bool = False) -> Path:
    splits = {"train": 12, "validation": 1, "test": 2} if split_level else {"": PER_LABEL}
    for label in LABELS:
        start = 0
        for split, n in splits.items():
            for i in range(start, start + n):
                put(root / split / label / f"{i:03d}.txt", f"the {THINGS[i]} left me feeling {label} today\n")
            start += n
    return root


@dataclass
class Shape:
    """A file shape: how to write it, what inspect must propose, and what ingesting with that gives."""

    name: str
    write: Callable[[Path], str]  # returns data.source
    settings: dict[str, Any] = field(default_factory=dict)  # proposed settings (besides source and labels)
    rows: int = N  # snapshot rows
    bad_rows: int = 0
    encoding: str | None = "utf-8"  # of the first file read
    labels: list[str] = field(default_factory=lambda: sorted(LABELS))


def _pipe_40(tmp: Path) -> str:
    text = delimited(rows(), "|", ["review_text", "feeling"], extra=40)
    text = with_bad_lines(text, {4: "a row | cut short", 17: "x|joy|" + "|".join(["1"] * 45)})
    return str(put(tmp / "emotions.psv", text))


def _crlf(tmp: Path) -> str:
    return str(put(tmp / "windows.csv", delimited(rows(), ",", ["text", "label"]).replace("\n", "\r\n")))


def _quoted_newlines(tmp: Path) -> str:
    frame = pd.DataFrame(rows(), columns=["text", "label"])
    frame["text"] = frame["text"].str.replace(" left me", ",\n left me; |", regex=False)
    frame.to_csv(tmp / "multiline.csv", index=False)
    return str(tmp / "multiline.csv")


def _cp1252(tmp: Path) -> str:
    text = delimited([(t.replace("feeling", "feeling très"), lab) for t, lab in rows()], ";", ["texte", "émotion"])
    return str(put(tmp / "export.csv", text.encode("cp1252")))


def _utf16(tmp: Path) -> str:
    return str(
        put(tmp / "unicode.txt", codecs.BOM_UTF16_LE + delimited(rows(), "\t", ["text", "label"]).encode("utf-16-le"))
    )


def _gzip(tmp: Path) -> str:
    return str(put(tmp / "data.csv.gz", gzip.compress(delimited(rows(), ",", ["text", "label"]).encode())))


def _zip(tmp: Path) -> str:
    with zipfile.ZipFile(tmp / "export.zip", "w") as archive:
        archive.writestr("export/data.tsv", delimited(rows(), "\t", ["text", "label"]))
    return str(tmp / "export.zip")


def _glob(tmp: Path) -> str:
    all_rows = rows()
    put(tmp / "parts" / "part-001.csv", delimited(all_rows[:40], ",", ["text", "label"]))
    put(tmp / "parts" / "part-002.csv", delimited(all_rows[40:], ",", ["text", "label"]))
    return str(tmp / "parts" / "part-*.csv")


def _json_array(tmp: Path) -> str:
    return str(
        put(
            tmp / "data.json",
            json.dumps([{"id": i, "content": t, "emotion": lab} for i, (t, lab) in enumerate(rows())]),
        )
    )


def _jsonl_bad_line(tmp: Path) -> str:
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in rows()]
    lines.insert(10, '{"text": "cut off mid-line", "lab')
    return str(put(tmp / "data.jsonl", "\n".join(lines) + "\n"))


def _spelled_three_ways(tmp: Path) -> str:
    spelled = [(t, [lab, lab.upper(), f" {lab.capitalize()} "][i % 3]) for i, (t, lab) in enumerate(rows())]
    return str(put(tmp / "labels.csv", delimited(spelled, ",", ["text", "label"], quote_all=True)))


def _numeric_ids(tmp: Path) -> str:
    ids = [(t, str(LABELS.index(lab))) for t, lab in rows()]
    return str(put(tmp / "ids.csv", delimited(ids, ",", ["text", "label_id"])))


def _comments(tmp: Path) -> str:
    return str(
        put(tmp / "commented.csv", "# exported 2024-01-01\n# by a tool\n" + delimited(rows(), ",", ["text", "label"]))
    )


def _split_files_semicolon(tmp: Path) -> str:
    all_rows = rows()
    put(tmp / "ds" / "train.csv", delimited(all_rows[:72], ";", ["text", "label"]))
    put(tmp / "ds" / "dev.csv", delimited(all_rows[72:78], ";", ["text", "label"]))
    put(tmp / "ds" / "test.csv", delimited(all_rows[78:], ";", ["text", "label"]))
    return str(tmp / "ds")


SHAPES = [
    Shape(
        "comma csv",
        lambda t: str(put(t / "plain.csv", delimited(rows(), ",", ["text", "label"]))),
        {"delimiter": "comma"},
    ),
    Shape(
        "semicolon csv, extra columns",
        lambda t: str(put(t / "semi.csv", delimited(rows(), ";", ["sentence", "emotion"], extra=3))),
        {"delimiter": "semicolon", "text_column": "sentence", "label_column": "emotion"},
    ),
    Shape("tab .tsv", lambda t: str(put(t / "tabs.tsv", delimited(rows(), "\t", ["text", "label"])))),
    Shape(
        "pipe, 40 extra columns, 2 malformed rows",
        _pipe_40,
        {"delimiter": "pipe", "text_column": "review_text", "label_column": "feeling", "bad_rows": "skip"},
        bad_rows=2,
    ),
    Shape(
        "pipe-delimited .txt with a header",
        lambda t: str(put(t / "export.txt", delimited(rows(), "|", ["text", "label"]))),
        {"format": "csv", "delimiter": "pipe"},
    ),
    Shape(
        "UTF-8 BOM",
        lambda t: str(put(t / "bom.csv", codecs.BOM_UTF8 + delimited(rows(), ",", ["text", "label"]).encode())),
        {"delimiter": "comma"},
        encoding="utf-8-sig",
    ),
    Shape("UTF-16 with BOM (Excel 'Unicode text')", _utf16, {"format": "csv", "delimiter": "tab"}, encoding="utf-16"),
    Shape(
        "cp1252 accents, semicolons",
        _cp1252,
        {"encoding": "cp1252", "delimiter": "semicolon", "text_column": "texte", "label_column": "émotion"},
        encoding="cp1252",
    ),
    Shape("quoted newlines and delimiters", _quoted_newlines, {"delimiter": "comma"}),
    Shape("CRLF line endings", _crlf, {"delimiter": "comma"}),
    Shape(
        "no header row",
        lambda t: str(put(t / "headless.csv", delimited(rows(), ","))),
        {"header": False, "delimiter": "comma", "text_column": "col1", "label_column": "col2"},
    ),
    Shape("comment lines", _comments, {"delimiter": "comma", "comment": "#"}),
    Shape(
        "xlsx workbook",
        lambda t: str(put(t / "book.xlsx", xlsx_bytes(pd.DataFrame(rows(), columns=["Text", "Label"])))),
        {"text_column": "Text", "label_column": "Label"},
        encoding=None,
    ),
    Shape("gzip-compressed csv", _gzip, {"delimiter": "comma"}),
    Shape("zip holding one tsv", _zip),
    Shape("glob of csv parts", _glob, {"delimiter": "comma"}),
    Shape("label folders", lambda t: str(label_tree(t / "by_label")), encoding="utf-8 (90)"),
    Shape("split/label folders", lambda t: str(label_tree(t / "by_split", split_level=True)), encoding="utf-8 (12)"),
    Shape("JSON array", _json_array, {"text_column": "content", "label_column": "emotion"}),
    Shape("JSON lines with a broken line", _jsonl_bad_line, {"bad_rows": "skip"}, bad_rows=1),
    Shape("labels spelled three ways", _spelled_three_ways, {"delimiter": "comma"}),
    Shape(
        "numeric label ids",
        _numeric_ids,
        {"delimiter": "comma", "label_column": "label_id"},
        labels=[str(i) for i in range(len(LABELS))],
    ),
    Shape("split files with semicolons", _split_files_semicolon, {"delimiter": "semicolon"}),
]


def config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(PARAMS, [f"project_dir={tmp_path}", "data.dvc_track=false", *overrides], environ={})


def pasted(flags: list[str]) -> list[str]:
    """`--set 'k=v'` flags as the shell hands them to `emotion run`: the values after each --set."""
    words = shlex.split(" ".join(flags))
    assert words[::2] == ["--set"] * (len(words) // 2)
    return words[1::2]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_catalogue_inspect_proposes_flags_that_prepare(shape: Shape, tmp_path: Path):
    (tmp_path / "in").mkdir()
    source = shape.write(tmp_path / "in")
    result = inspect(source, config(tmp_path).data, tmp_path)
    proposed = {k: v for k, v in result.settings.items() if k not in ("source", "labels")}
    assert proposed == shape.settings
    assert result.settings["source"] == source and result.check.startswith("ok: "), result.check
    assert result.malformed_count == shape.bad_rows

    cfg = config(tmp_path, *pasted(result.flags()))
    snapshot, _ = stages.ingest_stage(cfg)
    assert len(snapshot.frame) == shape.rows
    assert snapshot.report is not None and snapshot.report.bad_rows == shape.bad_rows
    assert snapshot.report.files[0].encoding == shape.encoding
    labels, report = stages.validate_stage(cfg, snapshot.frame)
    assert sorted(labels) == shape.labels
    assert report.passed
    prepared, _ = stages.prepare_stage(cfg, snapshot.frame, labels)
    assert sum(len(v) for v in prepared.splits.values()) == shape.rows
    if shape.bad_rows:
        check = report.check("source rows well-formed")
        assert (check.passed, check.unexpected_count) == (True, shape.bad_rows)
        assert "source rows well-formed" in (cfg.artifacts / "reports" / "validation_report.md").read_text()


def test_catalogue_has_at_least_twenty_shapes():
    assert len(SHAPES) >= 20


# --- malformed rows by policy -----------------------------------------------------------------------------------


def test_bad_rows_error_names_lines_and_shows_examples(tmp_path: Path):
    cfg = config(
        tmp_path, f"data.source={_pipe_40(tmp_path)}", "data.text_column=review_text", "data.label_column=feeling"
    )
    with pytest.raises(PipelineError) as info:
        ingest.read_source(cfg.data)
    message = str(info.value)
    assert "2 malformed row(s)" in message and "line(s) 4, 17" in message
    assert "line 4: 2 fields, expected 42: 'a row | cut short'" in message
    assert "data.bad_rows=skip" in message


def test_bad_rows_warn_is_a_validation_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = config(
        tmp_path,
        f"data.source={_pipe_40(tmp_path)}",
        "data.text_column=review_text",
        "data.label_column=feeling",
        "data.bad_rows=warn",
        "data.labels=null",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    assert [r.getMessage() for r in caplog.records if "malformed row left out" in r.getMessage()] == [
        f"{cfg.data.source} line 4: malformed row left out (2 fields, expected 42)",
        f"{cfg.data.source} line 17: malformed row left out (47 fields, expected 42)",
    ]
    _, report = stages.validate_stage(cfg, snapshot.frame)
    check = report.check("source rows well-formed")
    assert (check.passed, check.status, check.unexpected_count) == (False, "warn", 2)
    assert [e["line"] for e in check.examples] == [4, 17]
    assert "! source rows well-formed (2 rows)" in report.summary()
    saved = json.loads((cfg.artifacts / "reports" / "ingest_report.json").read_text())
    assert saved["bad_rows"] == 2 and saved["files"][0]["bad_lines"] == [4, 17]


def test_bad_rows_skip_is_counted_in_the_summary(tmp_path: Path):
    cfg = config(
        tmp_path,
        f"data.source={_pipe_40(tmp_path)}",
        "data.text_column=review_text",
        "data.label_column=feeling",
        "data.bad_rows=skip",
        "data.labels=null",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    _, report = stages.validate_stage(cfg, snapshot.frame)
    assert report.summary().splitlines()[:2] == [
        f"all {len(report.checks)} data checks passed on {N} rows",
        "  - source rows well-formed (2 rows): 2 malformed row(s) left out (data.bad_rows=skip): "
        "emotions.psv line(s) 4, 17",
    ]


BLANKS = 'text,label\ni feel fine,joy\n,\n\n"   ",\n   \ni am sad,sadness\n , \n' + "," * 5000 + "\n"


@pytest.mark.parametrize("streamed", [True, False])
def test_records_of_only_blank_cells_are_left_out_and_counted(tmp_path: Path, streamed: bool):
    """`,`, `"   "` and a long line of commas are records whose cells are all blank: left out as blank lines are,
    but counted and named by line in the ingest report (blank lines 4 and 6 are no records at all)."""
    path = tmp_path / ("blanks.csv" if streamed else "blanks.csv.gz")
    path.write_bytes(BLANKS.encode() if streamed else gzip.compress(BLANKS.encode()))
    report = ingest.SourceReport(str(path))
    frame = ingest.read_source(DataConfig(source=str(path), labels=None), tmp_path, report)
    assert frame["text"].tolist() == ["i feel fine", "i am sad"]
    assert (report.blank_records, report.files[0].blank_lines, report.bad_rows) == (4, [3, 5, 8, 9], 0)
    assert f"{path.name}: 4 record(s) of only blank cells left out at line(s) 3, 5, 8, 9" in report.notes()
    assert report.tracking_values()[1]["data_blank_records"] == 4
    assert report.to_dict()["blank_records"] == 4


def test_a_restored_snapshot_does_not_take_an_old_ingest_report(tmp_path: Path):
    cfg = config(
        tmp_path,
        f"data.source={_pipe_40(tmp_path)}",
        "data.text_column=review_text",
        "data.label_column=feeling",
        "data.bad_rows=skip",
        "data.labels=null",
    )
    snapshot, _ = stages.ingest_stage(cfg)
    frame = snapshot.frame.iloc[:-6]
    ingest.write_snapshot(frame, snapshot.path.parent)  # as `emotion restore-data` would put other bytes back
    _, report = stages.validate_stage(cfg, frame)
    assert "source rows well-formed" not in [c.name for c in report.checks]
    assert not (cfg.artifacts / "reports" / "ingest_report.json").exists()


# --- labels -------------------------------------------------------------------------------------------------------


GO_TO_EKMAN = {
    "admiration": "joy",
    "amusement": "joy",
    "annoyance": "anger",
    "grief": "sadness",
    "nervousness": "fear",
    "realization": "surprise",
    "neutral": None,
}


def test_label_map_merges_renames_and_drops_multi_label(tmp_path: Path):
    go = ["admiration,amusement", "annoyance", "grief", "nervousness,neutral", "realization", "neutral", "Admiration"]
    texts = [f"comment {i}" for i in range(len(go))]
    path = put(tmp_path / "go.csv", "text,labels\n" + "".join(f'{t},"{g}"\n' for t, g in zip(texts, go)))
    cfg = DataConfig(source=str(path), label_column="labels", multi_label=True, label_map=GO_TO_EKMAN)
    report = ingest.SourceReport(str(path))
    frame = ingest.read_source(cfg, report=report)
    assert frame["label"].tolist() == [["joy"], ["anger"], ["sadness"], ["fear"], ["surprise"], ["joy"]]
    assert frame["text"].tolist() == texts[:5] + texts[6:]  # the neutral-only row is left out
    assert report.labels.dropped_rows == 1
    assert report.labels.normalised == {"Admiration": "admiration"}
    assert report.labels.mapped == {
        "admiration -> joy": 2,
        "amusement -> joy": 1,
        "annoyance -> anger": 1,
        "grief -> sadness": 1,
        "nervousness -> fear": 1,
        "neutral -> (dropped)": 2,
        "realization -> surprise": 1,
    }
    assert "1 row(s) left out: the label map dropped all their labels" in report.notes()


def test_numeric_ids_named_by_label_names_and_map_keys_from_yaml_ints(tmp_path: Path):
    path = put(tmp_path / "ids.csv", "text,label\na,0\nb,1\nc,2\nd,7\n")
    cfg = load_config(
        PARAMS, [f"data.source={path}", "data.label_names=[Anger, joy, fear]", "data.label_map={2: scared}"], environ={}
    ).data
    assert cfg.label_map == {"2": "scared"}
    report = ingest.SourceReport(str(path))
    frame = ingest.read_source(cfg, report=report)
    assert frame["label"].tolist() == ["anger", "joy", "fear", "7"]  # 7 has no name: validation reports it
    assert report.labels.ids_named == 3 and report.labels.unused_map_keys == ["2"]


def test_declared_labels_are_normalised_like_the_data():
    assert DataConfig(labels=[" Joy", "SAD  ness"]).labels == ["joy", "sad ness"]


# --- more sources -------------------------------------------------------------------------------------------------


def test_a_list_of_split_files_with_mixed_formats(tmp_path: Path):
    all_rows = rows()
    train = put(tmp_path / "train.csv.gz", gzip.compress(delimited(all_rows[:72], ",", ["text", "label"]).encode()))
    val = put(tmp_path / "validation.json", json.dumps([{"text": t, "label": lab} for t, lab in all_rows[72:80]]))
    test = put(tmp_path / "test.tsv", delimited(all_rows[80:], "\t", ["text", "label"]))
    cfg = load_config(PARAMS, [f"data.source=[{train}, {val}, {test}]"], environ={}).data
    frame = ingest.normalize(ingest.read_source(cfg), cfg)
    assert frame["split"].value_counts().to_dict() == {"train": 72, "validation": 8, "test": 10}
    assert ingest.describe_source(cfg.source) == f"{train} + {val} + {test}"


def test_xlsx_sheet_option_and_a_missing_sheet(tmp_path: Path):
    notes = pd.DataFrame({"about": ["this workbook"]})
    data = pd.DataFrame(rows(), columns=["text", "label"])
    path = put(tmp_path / "book.xlsx", xlsx_bytes(notes.rename(columns={"about": "text"}), {"labelled": data}))
    frame = ingest.read_source(DataConfig(source=str(path), sheet="labelled"))
    assert len(frame) == N and set(frame["label"]) == set(LABELS)
    with pytest.raises(PipelineError, match=r"book\.xlsx: has no sheet 'Sheet9'; its sheets: data, labelled"):
        ingest.read_source(DataConfig(source=str(path), sheet="Sheet9"))


def test_delimiter_escapechar_and_quotechar_settings(tmp_path: Path):
    path = put(tmp_path / "odd.csv", "text~label\n'a ~ quoted' text~joy\nan escaped \\~ tilde~fear\n")
    cfg = DataConfig(source=str(path), delimiter="~", quotechar="'", escapechar="\\")
    assert ingest.read_source(cfg)["text"].tolist() == ["a ~ quoted text", "an escaped ~ tilde"]


# --- errors stay clear --------------------------------------------------------------------------------------------


def test_a_wrong_column_name_lists_the_columns_and_the_closest(tmp_path: Path):
    path = put(tmp_path / "data.csv", delimited(rows(), ",", ["Text", "feelings"], extra=2))
    cfg = config(tmp_path, f"data.source={path}", "data.label_column=feeling")
    snapshot, _ = stages.ingest_stage(cfg)
    with pytest.raises(DataValidationError) as info:
        stages.validate_stage(cfg, snapshot.frame)
    summary = info.value.report.summary()
    assert (
        "source: data.csv has no column 'feeling' (data.label_column); its columns: Text, feelings, extra_0, "
        "extra_1; closest: 'feelings' (--set data.label_column=feelings)"
    ) in summary
    assert "closest: 'Text' (--set data.text_column=Text)" in summary


def test_an_empty_label_column_is_refused_by_validation(tmp_path: Path):
    path = put(tmp_path / "data.csv", "".join(["text,label\n", *(f"{t},\n" for t, _ in rows())]))
    cfg = config(tmp_path, f"data.source={path}", "data.labels=null")
    snapshot, _ = stages.ingest_stage(cfg)
    with pytest.raises(PipelineError, match=r"the label column \(data.label_column=label\) is empty in every row"):
        stages.validate_stage(cfg, snapshot.frame)


@pytest.mark.parametrize(
    "name, payload, needle",
    [
        ("photo.csv", b"\x89PNG\r\n\x1a\n" + bytes(200), "is not a text file: it is a PNG image"),
        ("dump.csv", b"text,label\n" + bytes(range(256)) * 4, r"is not a text file \(it holds NUL bytes\)"),
        ("report.csv", b"%PDF-1.7\n...", "is not a text file: it is a PDF document"),
        ("broken.csv.gz", b"\x1f\x8b\x08\x00garbage", "is a damaged gzip file"),
        ("two.zip", None, r"holds 2 files \(a.csv, b.csv\); a zip source must hold exactly one"),
        ("latin.csv", "text,label\ncaf\xe9,joy\n".encode("latin-1"), r"not UTF-8 text .* set data.encoding=auto"),
    ],
)
def test_files_that_cannot_be_read_say_why(tmp_path: Path, name: str, payload: bytes | None, needle: str):
    path = tmp_path / name
    if payload is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.csv", "text,label\n")
            archive.writestr("b.csv", "text,label\n")
    else:
        path.write_bytes(payload)
    with pytest.raises(PipelineError, match=needle) as info:
        ingest.read_source(DataConfig(source=str(path)))
    assert str(path) in str(info.value)


def test_a_glob_without_matches_and_a_bad_delimiter_setting(tmp_path: Path):
    with pytest.raises(PipelineError, match=r"pattern 'nope/\*\.csv' matches no files"):
        ingest.read_source(DataConfig(source="nope/*.csv"), tmp_path)
    with pytest.raises(PipelineError, match="data.delimiter: .*'ab' is not auto, one character"):
        load_config(PARAMS, ["data.delimiter=ab"], environ={})
    assert load_config(PARAMS, ["data.delimiter=tab"], environ={}).data.delimiter == "\t"


# --- the command ----------------------------------------------------------------------------------------------


def test_emotion_inspect_prints_flags_and_json(tmp_path: Path, capsys: pytest.CaptureFixture):
    source = _pipe_40(tmp_path)
    assert cli.main(["inspect", source, "--set", f"project_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "delimiter  pipe    header: yes" in out
    assert "malformed  2 row(s)\n  line 4: 2 fields, expected 42: 'a row | cut short'" in out
    assert f"emotion run --set data.source={source} \\\n    --set data.delimiter=pipe" in out
    assert cli.main(["inspect", source, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] == {label: PER_LABEL for label in LABELS}
    assert data["text_column"] == "review_text" and data["label_column"] == "feeling"
    assert len(data["columns"]) == 42 and data["duplicates"] == 0
    assert data["flags"][-1] == "--set data.label_column=feeling"  # the labels are the declared ones: no labels=null
    assert "  bad_rows: skip\n" in data["params"]


def test_emotion_inspect_on_a_missing_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert cli.main(["inspect", str(tmp_path / "absent.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_ingest_and_prepare_a_cp1252_headerless_export_with_a_label_map(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    """A European spreadsheet export: semicolons, cp1252 accents, CRLF, no header, an extra label merged away."""
    lines = [f"le {t} m'a rendu {label} aujourd'hui, très;{label.capitalize()};x" for t, label in rows()]
    lines += [f"ce {thing} était contrariant;Annoyance;x" for thing in THINGS]
    source = put(tmp_path / "export.csv", "\r\n".join(lines).encode("cp1252"))
    assert cli.main(["inspect", str(source), "--json", "--config", str(PARAMS)]) == 0
    flags = json.loads(capsys.readouterr().out)["flags"]
    assert "--set data.encoding=cp1252" in flags and "--set data.header=false" in flags
    flags.append("--set 'data.label_map={annoyance: anger}'")
    args = [
        "--config",
        str(PARAMS),
        *shlex.split(" ".join(flags)),
        "--set",
        f"project_dir={tmp_path}",
        "--set",
        "data.dvc_track=false",
    ]
    assert cli.main(["ingest", *args]) == 0 and cli.main(["prepare", *args]) == 0
    out = capsys.readouterr().out
    assert "{'train': 85, 'validation': 10, 'test': 10}" in out  # 105 rows, 80/10/10 rounded
    assert "  - source: export.csv: read as cp1252" in out
    assert "  - source: data.label_map: annoyance -> anger (15)" in out
    label_map = json.loads((tmp_path / "artifacts" / "prepared" / "label_map.json").read_text())
    assert label_map["labels"] == sorted(LABELS)


def test_an_unclosed_quote_swallows_no_rows(tmp_path: Path):
    """A field opening with a quote that never closes would eat the rest of the file: it is read as text instead."""
    lines = delimited(rows(), ",", ["text", "label"]).splitlines()
    lines[3] = '"an opening quote, never closed,joy'  # 3 fields split on the delimiter alone: malformed
    lines[6] = '"a quote that never closes,fear'  # 2 fields: read with the quote as text
    path = put(tmp_path / "quotes.csv", "\n".join(lines) + "\n")
    report = ingest.SourceReport(str(path), "skip")
    frame = ingest.read_source(DataConfig(source=str(path), bad_rows="skip"), report=report)
    assert len(frame) == N - 1 and report.bad_rows == 1 and report.files[0].bad_rows[0].line == 4
    assert '"a quote that never closes' in frame["text"].tolist()
    assert "quotes.csv: 1 row(s) with an unclosed quote read with the quote as text: line(s) 7" in report.notes()


def test_the_validation_cache_key_follows_the_bad_row_policy():
    """skip and warn leave the same snapshot bytes but report differently: a cached report must not be reused."""
    from flows.caching import validation_cache_key

    def key(*overrides: str) -> str | None:
        return validation_cache_key(None, {"cfg": load_config(PARAMS, list(overrides), environ={}), "data_hash": "a"})

    assert key("data.bad_rows=skip") == key("data.bad_rows=skip") != key("data.bad_rows=warn")
