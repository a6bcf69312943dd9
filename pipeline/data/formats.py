"""The one format registry: every file format the pipeline reads, by name (``data.format``) and suffix.

An entry holds the format's suffixes, its whole-file reader and, where the format streams, its chunked reader.
Ingest, inspect, scoring and monitoring all dispatch through :data:`FORMATS`, so a new format is one entry here
plus its tests (see docs/formats.md); ``DataConfig.format`` lists the same names (a test keeps them in step).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import DataConfig
from pipeline.data import readers
from pipeline.errors import PipelineError

SAMPLE_ROWS = 10_000  # rows of a streaming, non-line format (Parquet) read as a sample
BLANK_RECORDS = "blank_records"  # a chunk's attrs: records of only blank cells the reader left out since the last


def blank_records(chunk: pd.DataFrame) -> int:
    """How many records of only blank cells the reader left out while reading ``chunk`` (0 if it says nothing)."""
    return int(chunk.attrs.get(BLANK_RECORDS, 0))


@dataclass
class Input:
    """One file's (decompressed) bytes and what reading them needs; readers record what they find in ``report``."""

    raw: bytes
    path: Path
    options: readers.ReadOptions
    report: readers.FileReport
    label_names: list[str] | None = None  # GoEmotions: label ids name lines of labels.txt

    def text(self) -> str:
        """The bytes decoded as data.encoding says (the encoding used is reported)."""
        text, self.report.encoding = readers.decode(self.raw, self.options.encoding, self.path)
        return text


@dataclass(frozen=True)
class Stream:
    """One file read from disk, never as one block of bytes: where it is, how to read it, rows per chunk."""

    path: Path
    options: readers.ReadOptions
    chunk_size: int
    columns: list[str] | None = None  # the columns wanted; a columnar format reads only these
    label_names: list[str] | None = None


@dataclass(frozen=True)
class Format:
    """One readable format. ``chunks`` is None for formats that cannot stream: they are read whole, then cut."""

    name: str  # the data.format value
    suffixes: tuple[str, ...]  # lower-case, with the dot
    read: Callable[[Input], pd.DataFrame]
    chunks: Callable[[Stream], Iterator[pd.DataFrame]] | None = None
    labelled: bool = False  # the reader names its columns text and label itself (data.*_column do not apply)
    detected: bool = False  # inspect works its settings (encoding, delimiter, header, JSON shape) out of the content
    delimited: bool = False  # delimited text with a header row (one line of the file is not a row)
    lines: bool = False  # a file's first lines are a file of this format, so a sample may be its head
    count: Callable[[Path], int] | None = None  # an exact row count without reading the rows
    # the whole file read from disk line by line (an uncompressed file is never all in memory); it raises
    # Unstreamable where the bytes must be read instead
    read_file: Callable[[Stream, readers.FileReport], pd.DataFrame] | None = None


# --- delimited text (csv, tsv) ---------------------------------------------------------------------------------


def _delimiter_of(text: str, options: readers.ReadOptions, default: str | None) -> str:
    """data.delimiter as ingest applies it: the format's own (tab for TSV) on auto, else the one named, else sniffed."""
    delimiter = default if default and options.delimiter == "auto" else options.delimiter
    if delimiter == "auto":
        return readers.sniff_delimiter(text, options) or ","
    return delimiter


def _delimited(default: str | None) -> Callable[[Input], pd.DataFrame]:
    def read(source: Input) -> pd.DataFrame:
        text = source.text()
        delimiter = _delimiter_of(text, source.options, default)
        return readers.read_delimited(text, delimiter, source.options, source.report)

    return read


class Unstreamable(Exception):
    """A file a streaming reader leaves to the format's bytes reader (an encoding other than UTF-8, bad bytes)."""


def _delimited_file(default: str | None) -> Callable[[Stream, readers.FileReport], pd.DataFrame]:
    """UTF-8 delimited text read from disk as ``_delimited`` reads its bytes; other encodings are left to it, so
    that decode() chooses them (and words their errors) exactly as before."""

    def read(stream: Stream, report: readers.FileReport) -> pd.DataFrame:
        encoding = readers.stream_encoding(stream.path, stream.options.encoding)
        if encoding not in ("utf-8", "utf-8-sig"):
            raise Unstreamable(encoding)
        report.encoding = encoding
        try:
            with stream.path.open(encoding=encoding, newline="") as fh:
                delimiter = _delimiter_of(fh.read(readers.SNIFF_CHARS + 1), stream.options, default)
                fh.seek(0)
                return readers.read_delimited_lines(fh, delimiter, stream.options, report)
        except UnicodeDecodeError as exc:
            raise Unstreamable(str(exc)) from exc

    return read


def _delimited_chunks(default: str | None) -> Callable[[Stream], Iterator[pd.DataFrame]]:
    def chunks(stream: Stream) -> Iterator[pd.DataFrame]:
        opts = stream.options
        with stream.path.open(encoding=readers.stream_encoding(stream.path, opts.encoding), newline="") as fh:
            delimiter = _delimiter_of(fh.read(readers.SNIFF_CHARS), opts, default)
            fh.seek(0)
            yield from _iter_delimited(fh, delimiter, stream)

    return chunks


def _iter_delimited(lines: Iterable[str], delimiter: str, stream: Stream) -> Iterator[pd.DataFrame]:
    """Delimited records in chunks, with ingest's rules: a record whose field count differs from the header's is
    malformed and follows data.bad_rows (error: refused as soon as one is met, with its line; skip / warn: left
    out and reported at the end)."""
    opts = stream.options
    report = readers.FileReport(str(stream.path), "csv", delimiter=delimiter, header=opts.header)
    columns: list[str] | None = None
    rows: list[list[str | None]] = []
    counted = 0  # blank records already attached to a chunk

    def chunk() -> pd.DataFrame:
        nonlocal counted
        frame = pd.DataFrame(rows, columns=columns, dtype=object)
        frame.attrs[BLANK_RECORDS], counted = report.blank_records - counted, report.blank_records
        return frame

    for start, _, fields in readers.iter_records(lines, delimiter, opts, report):
        if columns is None:
            columns = readers.unique_names(fields) if opts.header else [f"col{i}" for i in range(1, len(fields) + 1)]
            report.columns = columns
            if opts.header:
                continue
        if len(fields) != len(columns):
            report.bad_rows.append(readers.BadRow(start, len(fields), len(columns), delimiter.join(fields)[:300]))
            if opts.bad_rows == "error":
                readers.apply_bad_row_policy(report, opts.bad_rows)
            continue
        rows.append([f if f != "" else None for f in fields])
        if len(rows) == stream.chunk_size:
            yield chunk()
            rows = []
    if rows or (columns is not None and report.blank_records > counted):  # blank records after the last row too
        yield chunk()
    readers.apply_bad_row_policy(report, opts.bad_rows)


# --- dair-ai "text;label" lines --------------------------------------------------------------------------------

TEXT_LABEL_COLUMNS = ["text", "label"]


def _text_label_row(line: str) -> dict[str, str | None]:
    """``text;label``: the label after the last ';' (a line without one is all text)."""
    text, sep, label = line.rpartition(";")
    return {"text": text if sep else line, "label": label.strip() if sep else None}


def read_text_label(text: str) -> pd.DataFrame:
    """dair-ai format: ``text;label`` per line, blank lines ignored."""
    rows = [_text_label_row(line) for line in text.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=TEXT_LABEL_COLUMNS)


def _text_label_chunks(stream: Stream) -> Iterator[pd.DataFrame]:
    rows: list[dict[str, str | None]] = []
    with stream.path.open(encoding=readers.stream_encoding(stream.path, stream.options.encoding)) as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rows.append(_text_label_row(line))
            if len(rows) == stream.chunk_size:
                yield pd.DataFrame(rows, columns=TEXT_LABEL_COLUMNS)
                rows = []
    if rows:
        yield pd.DataFrame(rows, columns=TEXT_LABEL_COLUMNS)


# --- GoEmotions TSV --------------------------------------------------------------------------------------------

GOEMOTIONS_CSV = {
    "sep": "\t",
    "header": None,
    "names": ["text", "ids", "id"],
    "dtype": str,
    "quoting": csv.QUOTE_NONE,
    "keep_default_na": False,
    "na_values": [""],
}


def _goemotions_frame(raw: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``text<TAB>comma-separated label ids<TAB>comment id``: ids name lines of labels.txt; an id outside it is
    kept as written, so validation reports it as an unknown label."""

    def to_names(ids: object) -> list[str]:
        if not isinstance(ids, str):
            return []
        out = []
        for part in ids.split(","):
            part = part.strip()
            out.append(names[int(part)] if part.isdigit() and int(part) < len(names) else part)
        return out

    return pd.DataFrame({"text": raw["text"], "label": raw["ids"].map(to_names)})


def _read_goemotions(source: Input) -> pd.DataFrame:
    if source.label_names is None:
        raise PipelineError(f"{source.path}: the GoEmotions format needs labels.txt beside the split files")
    text = source.text()
    return _goemotions_frame(pd.read_csv(io.StringIO(text), **GOEMOTIONS_CSV), source.label_names)  # type: ignore[call-overload]


def _goemotions_chunks(stream: Stream) -> Iterator[pd.DataFrame]:
    """Streamed for scoring, which needs only the text: without labels.txt the label ids stay as written."""
    encoding = readers.stream_encoding(stream.path, stream.options.encoding)
    kwargs = GOEMOTIONS_CSV | {"chunksize": stream.chunk_size, "encoding": encoding}
    with pd.read_csv(stream.path, **kwargs) as reader:  # type: ignore[call-overload]
        for raw in reader:
            yield _goemotions_frame(raw, stream.label_names or [])


# --- JSON ------------------------------------------------------------------------------------------------------


def _read_json(source: Input) -> pd.DataFrame:
    return readers.read_json(source.text(), source.report)


def _jsonl_chunks(stream: Stream) -> Iterator[pd.DataFrame]:
    with pd.read_json(
        stream.path, lines=True, dtype=False, chunksize=stream.chunk_size, encoding="utf-8-sig"
    ) as reader:
        yield from reader


# --- Parquet and spreadsheets ----------------------------------------------------------------------------------


def _read_parquet(source: Input) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(source.raw))


def _parquet_file(path: Path) -> Any:
    """The file opened by pyarrow; a damaged or non-Parquet file is a ValueError (pyarrow's ArrowInvalid)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _parquet_chunks(stream: Stream) -> Iterator[pd.DataFrame]:
    """Row-group batches: only the wanted columns are read."""
    parquet = _parquet_file(stream.path)
    present = [c for c in stream.columns if c in parquet.schema_arrow.names] if stream.columns else None
    for batch in parquet.iter_batches(batch_size=stream.chunk_size, columns=present):
        yield batch.to_pandas()


def _parquet_rows(path: Path) -> int:
    return int(_parquet_file(path).metadata.num_rows)


def _read_xlsx(source: Input) -> pd.DataFrame:
    return readers.read_xlsx(source.raw, source.options, source.report)


# --- the registry ----------------------------------------------------------------------------------------------

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "text",
            (".txt",),
            lambda s: read_text_label(s.text()),
            _text_label_chunks,
            labelled=True,
            detected=True,
            lines=True,
        ),
        Format(
            "csv",
            (".csv", ".psv"),
            _delimited(None),
            _delimited_chunks(None),
            read_file=_delimited_file(None),
            detected=True,
            delimited=True,
            lines=True,
        ),
        Format(
            "tsv",
            (".tsv", ".tab"),
            _delimited("\t"),
            _delimited_chunks("\t"),
            read_file=_delimited_file("\t"),
            detected=True,
            delimited=True,
            lines=True,
        ),
        Format("jsonl", (".jsonl",), _read_json, _jsonl_chunks, detected=True, lines=True),
        Format("json", (".json",), _read_json, detected=True),
        Format("parquet", (".parquet", ".pq"), _read_parquet, _parquet_chunks, count=_parquet_rows),
        Format("xlsx", (".xlsx",), _read_xlsx),
        Format(
            "goemotions", (), _read_goemotions, _goemotions_chunks, labelled=True, lines=True
        ),  # chosen by labels.txt
    )
}
SUFFIXES = {suffix: f for f in FORMATS.values() for suffix in f.suffixes}


def by_suffix(name: str | Path) -> Format | None:
    """The format a file name's suffix names (``name`` without .gz/.zip), or None."""
    return SUFFIXES.get(Path(name).suffix.lower())


def is_data_file(path: Path) -> bool:
    """A file whose name (less .gz/.zip) has a suffix of the registry."""
    return path.is_file() and by_suffix(readers.data_name(path)) is not None


def suffix_list() -> str:
    return ", ".join(sorted(SUFFIXES))


def format_of(name: str | Path, declared: str, path: Path) -> Format:
    """The format to read a file with: the declared one (data.format), else the one its suffix names."""
    if declared != "auto":
        if declared not in FORMATS:
            raise PipelineError(f"unknown data.format {declared!r}: use auto or one of {', '.join(FORMATS)}")
        return FORMATS[declared]
    fmt = by_suffix(name)
    if fmt is None:
        raise PipelineError(
            f"cannot tell the format of {path}: use one of the suffixes {suffix_list()} (optionally .gz or .zip) "
            "or set data.format"
        )
    return fmt


def read_options(cfg: DataConfig) -> readers.ReadOptions:
    """The data.* reader settings."""
    return readers.ReadOptions(
        cfg.delimiter, cfg.quotechar, cfg.escapechar, cfg.header, cfg.comment, cfg.encoding, cfg.bad_rows, cfg.sheet
    )


@contextmanager
def _named_errors(fmt: Format, path: Path) -> Iterator[None]:
    """What a file's content makes a reader fail on, as a one-line error naming the file."""
    try:
        yield
    except PipelineError as exc:
        raise exc if str(path) in str(exc) else PipelineError(f"{path}: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise PipelineError(f"{path} is empty: it holds no rows") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError(f"cannot read {path} as {fmt.name}: {exc}") from exc


def parse(fmt: Format, source: Input) -> pd.DataFrame:
    """The format's whole-file reader, its failures named."""
    with _named_errors(fmt, source.path):
        return fmt.read(source)


@dataclass
class Loaded:
    """A file read by its format: the rows, what reading found, and whether they are only a sample."""

    format: Format
    frame: pd.DataFrame
    report: readers.FileReport
    sampled: bool = False


def load(
    path: Path,
    declared: str,
    options: readers.ReadOptions,
    label_names: list[str] | None = None,
    limit: int | None = None,
) -> Loaded:
    """A file's rows (data.format ``declared``, else its suffix). With ``limit`` bytes, a bounded sample: the head
    (whole lines) of a line-based format, the first chunk of one that streams, else the whole file."""
    if limit is None:
        streamed = _load_streamed(path, declared, options, label_names)
        if streamed is not None:
            return streamed
        raw, name = readers.read_bytes(path)
        head = readers.Head(raw, name, False)
    else:
        head = readers.read_head(path, limit)
    fmt = format_of(head.name, declared, path)
    report = readers.FileReport(str(path), fmt.name)
    if head.truncated and not fmt.lines:
        if fmt.chunks is not None and readers.data_name(path) == path.name:  # streams, uncompressed
            return Loaded(fmt, _first_chunk(fmt, Stream(path, options, SAMPLE_ROWS, None, label_names)), report, True)
        head = readers.Head(readers.read_bytes(path)[0], head.name, False)
    frame = parse(fmt, Input(head.raw, path, options, report, label_names))
    return Loaded(fmt, frame, report, head.truncated)


def _load_streamed(
    path: Path, declared: str, options: readers.ReadOptions, label_names: list[str] | None
) -> Loaded | None:
    """An uncompressed file whose format reads files from disk, read so; None: read its bytes instead."""
    if not readers.is_plain(path):
        return None
    fmt = format_of(readers.data_name(path), declared, path)
    if fmt.read_file is None:
        return None
    report = readers.FileReport(str(path), fmt.name)
    try:
        with _named_errors(fmt, path):
            return Loaded(fmt, fmt.read_file(Stream(path, options, 0, None, label_names), report), report)
    except Unstreamable:
        return None


def _first_chunk(fmt: Format, source: Stream) -> pd.DataFrame:
    with _named_errors(fmt, source.path):
        chunks = stream(fmt, source)
        try:
            return next(chunks, pd.DataFrame())
        finally:
            chunks.close()


def stream(fmt: Format, source: Stream) -> Generator[pd.DataFrame, None, None]:
    """The file's rows in chunks: streamed where the format streams, else read whole (bad-row policy applied) and
    cut, so every format of the registry can be scored."""
    if fmt.chunks is not None:
        yield from fmt.chunks(source)
        return
    raw, _ = readers.read_bytes(source.path)
    report = readers.FileReport(str(source.path), fmt.name)
    frame = parse(fmt, Input(raw, source.path, source.options, report, source.label_names))
    readers.apply_bad_row_policy(report, source.options.bad_rows)
    for start in range(0, len(frame), source.chunk_size):
        yield frame.iloc[start : start + source.chunk_size]


def count_rows(fmt: Format, path: Path, options: readers.ReadOptions) -> int:
    """The number of rows, for a progress bar: exact where the format knows it, else lines (less a header)."""
    if fmt.count is not None:
        return fmt.count(path)
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return lines - (1 if fmt.delimited and options.header else 0)
