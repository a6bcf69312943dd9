"""The format registry: every entry is read alike by ingest, inspect and score, and the config lists the same names.

Each format has a fixture writer below; an entry added to ``pipeline/data/formats.py`` without one fails
``test_every_format_reads_alike`` for that entry (see docs/formats.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pandas as pd
import pytest

import emotion_cli as cli
from pipeline.config import DataConfig
from pipeline.data import formats, ingest
from pipeline.data import inspect as inspect_module
from pipeline.data.inspect import detect, inspect
from pipeline.scoring import reader

ROWS = [
    ("I can't believe it worked, what a relief today", "joy"),
    ("the train was late again and nobody told us why", "anger"),
    ("je suis très content du résultat final, vraiment", "joy"),
    ("my old dog passed away last night in his sleep", "sadness"),
    ("they cancelled the concert an hour before it began", "anger"),
    ("nothing will feel the same without her around", "sadness"),
]
TEXTS = [text for text, _ in ROWS]
GOEMOTIONS_LABELS = ["anger", "joy", "sadness"]


@dataclass(frozen=True)
class Fixture:
    source: Path  # what data.source and `emotion inspect` are given
    data_file: Path  # the file itself (what `emotion score` is given)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["text", "label"])


def _one_file(name: str, write: Callable[[Path], None]) -> Callable[[Path], Fixture]:
    def writer(folder: Path) -> Fixture:
        path = folder / name
        write(path)
        return Fixture(path, path)

    return writer


def _goemotions(folder: Path) -> Fixture:
    """GoEmotions as published: labels.txt beside headerless ``text<TAB>ids<TAB>id`` split files."""
    source = folder / "goemotions"
    source.mkdir()
    (source / "labels.txt").write_text("\n".join(GOEMOTIONS_LABELS) + "\n")
    lines = [f"{text}\t{GOEMOTIONS_LABELS.index(label)}\tc{i}" for i, (text, label) in enumerate(ROWS)]
    (source / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Fixture(source, source / "train.tsv")


WRITERS: dict[str, Callable[[Path], Fixture]] = {
    "text": _one_file("in.txt", lambda p: p.write_text("".join(f"{t};{lab}\n" for t, lab in ROWS), "utf-8")),
    "csv": _one_file("in.csv", lambda p: _frame().to_csv(p, index=False)),
    "tsv": _one_file("in.tsv", lambda p: _frame().to_csv(p, sep="\t", index=False)),
    "jsonl": _one_file("in.jsonl", lambda p: _frame().to_json(p, orient="records", lines=True, force_ascii=False)),
    "json": _one_file("in.json", lambda p: p.write_text(json.dumps(_frame().to_dict(orient="records")), "utf-8")),
    "parquet": _one_file("in.parquet", lambda p: _frame().to_parquet(p, index=False)),
    "xlsx": _one_file("in.xlsx", lambda p: _frame().to_excel(p, index=False, engine="openpyxl")),
    "goemotions": _goemotions,
}


def test_the_config_lists_the_registrys_formats() -> None:
    declared = set(get_args(DataConfig.model_fields["format"].annotation))
    assert declared == {"auto"} | set(formats.FORMATS)


def test_suffixes_name_one_format_each() -> None:
    suffixes = [s for f in formats.FORMATS.values() for s in f.suffixes]
    assert len(suffixes) == len(set(suffixes)) and all(s.startswith(".") and s == s.lower() for s in suffixes)


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_every_format_reads_alike(name: str, tmp_path: Path) -> None:
    """Ingest (declared and by suffix), inspect and score read the same texts from a file of each format."""
    writer = WRITERS.get(name)
    assert writer is not None, f"format {name!r} has no fixture writer: add one to WRITERS in {__file__}"
    fixture = writer(tmp_path)
    declared = DataConfig(source=str(fixture.source), format=name)  # type: ignore[arg-type]

    ingested = ingest.read_source(declared, tmp_path)
    assert ingested["text"].tolist() == TEXTS
    if formats.FORMATS[name].suffixes:
        by_suffix = ingest.read_source(DataConfig(source=str(fixture.source)), tmp_path)
        assert by_suffix["text"].tolist() == TEXTS
        assert by_suffix["label"].tolist() == [label for _, label in ROWS]

    inspected = inspect(str(fixture.source), DataConfig(), tmp_path)
    assert inspected.rows == len(ROWS) and inspected.check.startswith(f"ok: {len(ROWS)} rows"), inspected.check
    frame = detect(fixture.data_file, DataConfig(), inspect_module.SAMPLE_BYTES).frame
    assert frame[inspected.text_column].tolist() == TEXTS

    files = reader.input_files([str(fixture.data_file)])
    scored = pd.concat(list(reader.chunks(files, declared, 4, None)), ignore_index=True)
    assert scored["text"].tolist() == TEXTS and scored["id"].tolist() == list(range(len(ROWS)))


# --- bounded memory and clear errors on large or damaged files ---------------------------------------------------


def _valid_rows_then_junk(path: Path, rows: int, size: int) -> Path:
    """A CSV whose ``rows`` valid rows are followed by sparse junk (blank lines, empty fields, a long line of
    commas) up to ``size`` bytes: what an export with a broken tail looks like."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("text,label\n")
        for i in range(rows):
            fh.write(f"row {i} of the export which I liked a lot,{ROWS[i % len(ROWS)][1]}\n")
        block = "\n" * 3000 + ",\n" * 3000 + " , \n" * 1000 + "," * 200_000 + "\n"
        while fh.tell() < size:
            fh.write(block)
    return path


def test_inspect_reads_a_bounded_sample_of_a_large_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import tracemalloc

    big = _valid_rows_then_junk(tmp_path / "big.csv", 300, 8 << 20)
    monkeypatch.setattr(inspect_module, "SAMPLE_BYTES", 256 << 10)
    tracemalloc.start()
    try:
        result = inspect(str(big), DataConfig(), tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"inspect held {peak / 2**20:.1f} MB for a 256 KB sample of an 8 MB file"
    assert result.rows == 300 and result.text_column == "text" and result.label_column == "label"
    lines, megabytes = big.read_bytes().count(b"\n"), big.stat().st_size / 2**20
    assert (
        result.sample.startswith("the first 0.2 MB (") and f" of {lines:,} lines, {megabytes:.1f} MB)" in result.sample
    )
    assert result.check.startswith("ok: 300 rows of the sample"), result.check
    assert cli.main(["inspect", str(big)]) == 0
    assert "sample     the first 0.2 MB" in capsys.readouterr().out


@pytest.mark.slow
def test_ingest_reads_a_large_csv_from_disk_in_bounded_memory(tmp_path: Path) -> None:
    """Only the rows and the record being read are held, not the file's bytes, text or lines."""
    import tracemalloc

    big = _valid_rows_then_junk(tmp_path / "big.csv", 300, 8 << 20)
    report = ingest.SourceReport(str(big))
    tracemalloc.start()
    try:
        frame = ingest.read_source(DataConfig(source=str(big)), tmp_path, report)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"ingest held {peak / 2**20:.1f} MB for 300 rows of an 8 MB file"
    assert len(frame) == 300 and report.bad_rows == 0 and report.files[0].encoding == "utf-8"


def test_inspect_samples_a_large_parquet_file_by_its_first_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.parquet"
    rows = 3 * formats.SAMPLE_ROWS
    texts = [f"text number {i} with some words {i * 7919 % 104729}" for i in range(rows)]
    pd.DataFrame({"text": texts, "label": [ROWS[i % 6][1] for i in range(rows)]}).to_parquet(path, row_group_size=5000)
    monkeypatch.setattr(inspect_module, "SAMPLE_BYTES", 64 << 10)
    assert path.stat().st_size > 64 << 10
    result = inspect(str(path), DataConfig(), tmp_path)
    assert result.rows == formats.SAMPLE_ROWS and result.sample == f"the first 10,000 of {rows:,} rows"
    assert result.check.startswith(f"ok: {formats.SAMPLE_ROWS} rows of the sample"), result.check


@pytest.mark.parametrize("content", [b"", b"text,label\nnot parquet at all,joy\n"], ids=["empty", "csv inside"])
def test_inspect_on_a_file_named_parquet_that_is_not_one_is_a_one_line_error(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(content)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read {path} as parquet: ") and "\n" not in err
    assert "Traceback" not in err
