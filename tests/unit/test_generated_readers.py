"""Generated files for the readers and `emotion inspect`: any bytes, any delimiter, any suffix the format registry
knows gives rows or a clear PipelineError, never another exception, never more than a bounded amount of memory, and
the file is never changed."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import DataConfig
from pipeline.data import ingest
from pipeline.data.inspect import inspect
from pipeline.errors import PipelineError

SUFFIXES = [".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet", ".xlsx", ".gz"]
DELIMITERS = [",", ";", "\t", "|", ":", " ", ""]
MEMORY_LIMIT = 64 << 20  # a few KB of input may cost parsing buffers, never a copy per byte
GENERATED = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["joy", "fear", "", '"', '""', "a;b", "&quot;", "\\n", "\x00", "\u200b", "ï¿½", "1", "0.5", "-"]
)
rows = st.lists(st.lists(cells, min_size=0, max_size=5), max_size=12)
raw_bytes = st.binary(max_size=400)


def delimited(table: list[list[str]], delimiter: str, header: bool, trailing: bool) -> bytes:
    lines = ([["text", "label"]] if header else []) + table
    end = delimiter if trailing else ""
    return "\n".join(delimiter.join(row) + end for row in lines).encode("utf-8")


@pytest.fixture(scope="module", autouse=True)
def imports_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Inspect once on a good file first: its first call imports Great Expectations (over 100 MB of Python objects),
    which is not what the memory bound is about."""
    good = tmp_path_factory.mktemp("warm-up") / "good.csv"
    good.write_text("text,label\n" + "".join(f"i feel fine {i},joy\ni am scared {i},fear\n" for i in range(20)))
    inspect(str(good), DataConfig(labels=None), good.parent)


def read_or_refuse(path: Path, tmp_path: Path) -> None:
    """Ingest's reader and inspect on one file: rows, or a PipelineError; within the memory bound; file unchanged."""
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        for attempt in (
            lambda: ingest.read_source(DataConfig(source=str(path), labels=None), tmp_path),
            lambda: inspect(str(path), DataConfig(labels=None), tmp_path),
        ):
            try:
                attempt()
            except PipelineError as exc:
                assert str(exc).strip() and "Traceback" not in str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{path.name}: {peak / 2**20:.1f} MB for {path.stat().st_size} bytes"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.slow
@GENERATED
@given(data=raw_bytes, suffix=st.sampled_from(SUFFIXES))
@example(data=b"", suffix=".parquet")
@example(data=b"text,label\nhello,joy\n", suffix=".parquet")  # not a Parquet file
@example(data=b"\xff\xfe\x00a\x00", suffix=".csv")
@example(data=b"PK\x03\x04junk", suffix=".xlsx")
def test_any_bytes_under_any_suffix_give_rows_or_a_clear_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"generated{suffix}"
    path.write_bytes(data)
    read_or_refuse(path, tmp_path)


@pytest.mark.slow
@GENERATED
@given(
    table=rows,
    delimiter=st.sampled_from(DELIMITERS),
    header=st.booleans(),
    trailing=st.booleans(),
    suffix=st.sampled_from([".csv", ".tsv", ".txt"]),
)
@example(table=[["i feel fine", "joy"], ["x", ""]], delimiter=";", header=False, trailing=True, suffix=".txt")
@example(table=[['"unterminated', "joy"]], delimiter=",", header=True, trailing=False, suffix=".csv")
def test_any_delimited_table_gives_rows_or_a_clear_error(
    tmp_path: Path, table: list[list[str]], delimiter: str, header: bool, trailing: bool, suffix: str
) -> None:
    path = tmp_path / f"generated{suffix}"
    path.write_bytes(delimited(table, delimiter, header, trailing))
    read_or_refuse(path, tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_an_empty_file_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(PipelineError):
        inspect(str(path), DataConfig(labels=None), tmp_path)
