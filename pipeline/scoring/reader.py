"""The texts to score, streamed chunk by chunk from files, folders or globs in any format ingest reads."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from pipeline.config import DataConfig
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.data.readers import ReadOptions

ROW_ID = "id"  # the output's id column: the input's id column, or the input row number


def input_files(specs: list[str], base_dir: Path = Path(".")) -> list[Path]:
    """Every file named by ``specs`` (files, folders of data files, globs), in order, each once."""
    from pipeline.data.ingest import SUFFIX_FORMATS

    found: list[Path] = []
    for spec in specs:
        path = base_dir / Path(spec).expanduser()
        if glob.has_magic(str(path)):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
            if not matches:
                raise PipelineError(f"no file matches {spec}")
            found += matches
        elif path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in SUFFIX_FORMATS]
            if not files:
                raise PipelineError(f"{path} holds no data files (suffixes {sorted(SUFFIX_FORMATS)})")
            found += [p for p in files if not p.name.startswith(".")]
        elif path.is_file():
            found.append(path)
        else:
            raise PipelineError(f"input {spec} does not exist")
    return list(dict.fromkeys(p.resolve() for p in found))


def _delimiter(fh: TextIO, fmt: str, opts: ReadOptions) -> str:
    """data.delimiter as ingest applies it: tab for a TSV on auto, else the one named, else sniffed."""
    from pipeline.data import readers

    delimiter = "\t" if fmt == "tsv" and opts.delimiter == "auto" else opts.delimiter
    if delimiter == "auto":
        delimiter = readers.sniff_delimiter(fh.read(readers.SNIFF_CHARS), opts) or ","
        fh.seek(0)
    return delimiter


def _delimited_chunks(path: Path, fmt: str, cfg: DataConfig, chunk_size: int) -> Iterator[pd.DataFrame]:
    """A CSV/TSV streamed with ingest's reading rules (data.delimiter, quotechar, escapechar, header, comment,
    encoding): a record whose field count differs from the header's is malformed and follows data.bad_rows
    (error: refused as soon as one is met, with its line; skip / warn: left out and reported at the end)."""
    from pipeline.data import readers
    from pipeline.data.ingest import read_options

    opts = read_options(cfg)
    report = readers.FileReport(str(path), fmt)
    with path.open(encoding=readers.stream_encoding(path, cfg.encoding), newline="") as fh:
        report.delimiter = _delimiter(fh, fmt, opts)
        columns: list[str] | None = None
        rows: list[list[str | None]] = []
        for start, _, fields in readers.iter_records(fh, report.delimiter, opts):
            if columns is None:
                columns = (
                    readers.unique_names(fields) if opts.header else [f"col{i}" for i in range(1, len(fields) + 1)]
                )
                report.header, report.columns = opts.header, columns
                if opts.header:
                    continue
            if len(fields) != len(columns):
                raw = report.delimiter.join(fields)[:300]
                report.bad_rows.append(readers.BadRow(start, len(fields), len(columns), raw))
                if cfg.bad_rows == "error":
                    readers.apply_bad_row_policy(report, cfg.bad_rows)
                continue
            rows.append([f if f != "" else None for f in fields])
            if len(rows) == chunk_size:
                yield pd.DataFrame(rows, columns=columns, dtype=object)
                rows = []
    if rows:
        yield pd.DataFrame(rows, columns=columns, dtype=object)
    readers.apply_bad_row_policy(report, cfg.bad_rows)


def _text_lines(path: Path, chunk_size: int, encoding: str) -> Iterator[pd.DataFrame]:
    """dair-ai ``text;label`` lines as ingest reads them (label after the last ';', blank lines ignored)."""
    rows: list[str] = []
    from pipeline.data.readers import stream_encoding

    with path.open(encoding=stream_encoding(path, encoding)) as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, sep, _ = line.rpartition(";")
            rows.append(text if sep else line)
            if len(rows) == chunk_size:
                yield pd.DataFrame({"text": rows})
                rows = []
    if rows:
        yield pd.DataFrame({"text": rows})


def _parquet_batches(path: Path, columns: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(batch_size=chunk_size, columns=present):
        yield batch.to_pandas()


def _raw_chunks(path: Path, fmt: str, cfg: DataConfig, columns: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    if fmt == "text":
        yield from _text_lines(path, chunk_size, cfg.encoding)
    elif fmt in ("csv", "tsv"):
        yield from _delimited_chunks(path, fmt, cfg, chunk_size)
    elif fmt == "jsonl":
        with pd.read_json(path, lines=True, dtype=False, chunksize=chunk_size, encoding="utf-8-sig") as reader:
            yield from reader
    elif fmt == "parquet":
        yield from _parquet_batches(path, columns, chunk_size)
    else:
        raise PipelineError(f"{path}: the {fmt} format cannot be scored; use CSV/TSV, JSONL, Parquet or text;label")


def _file_format(path: Path, cfg: DataConfig) -> str:
    """How ingest would read this file; GoEmotions' id-mapped TSV is read by suffix (scoring needs only the text)."""
    from pipeline.data.ingest import format_of

    return format_of(path, cfg.format if cfg.format != "goemotions" else "auto", path)


def file_chunks(path: Path, cfg: DataConfig, chunk_size: int, id_column: str | None) -> Iterator[pd.DataFrame]:
    """One file's rows in chunks of ``chunk_size``, as frames with ``text`` and (if the file has it) ``id``."""
    fmt = _file_format(path, cfg)
    wanted = [cfg.text_column] + ([id_column] if id_column else [])
    try:
        for raw in _raw_chunks(path, fmt, cfg, wanted, chunk_size):
            if fmt != "text" and cfg.text_column not in raw:
                raise PipelineError(
                    f"{path} has no text column '{cfg.text_column}' (columns: {list(raw.columns)}); "
                    "set data.text_column"
                )
            frame = raw.rename(columns={cfg.text_column: "text"})[["text"]].reset_index(drop=True)
            if id_column and id_column in raw:
                frame.insert(0, ROW_ID, raw[id_column].astype(str).to_numpy())
            yield frame
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{path} is not {exc.encoding} text ({exc.reason} at byte {exc.start}); set data.encoding to the file's "
            "encoding, or auto"
        ) from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError(f"cannot read {path} as {fmt}: {exc}") from exc


def chunks(files: list[Path], cfg: DataConfig, chunk_size: int, id_column: str | None) -> Iterator[pd.DataFrame]:
    """Every file's rows in chunks (a chunk never spans two files), each with an ``id``: the input's id column
    (``id_column``, or ``id`` when present) or the input row number counted across the files from 0."""
    column = id_column or ROW_ID
    uses_ids: bool | None = None
    row = 0
    for path in files:
        for frame in file_chunks(path, cfg, chunk_size, column):
            has_ids = ROW_ID in frame
            if uses_ids is None:
                uses_ids = has_ids
                if id_column and not has_ids:
                    raise PipelineError(f"{path} has no id column '{id_column}': drop --id-column or add it")
            if has_ids != uses_ids:
                raise PipelineError(
                    f"{path} {'has' if has_ids else 'lacks'} the id column '{column}' unlike "
                    f"{files[0]}: give every input file one, or none"
                )
            if not has_ids:
                frame.insert(0, ROW_ID, range(row, row + len(frame)))
            row += len(frame)
            yield frame


def count_rows(files: list[Path], cfg: DataConfig) -> int:
    """The number of input rows for the progress bar: exact for Parquet, lines (minus a header) otherwise."""
    total = 0
    for path in files:
        fmt = _file_format(path, cfg)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
            continue
        with path.open("rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        total += lines - (1 if fmt in ("csv", "tsv") else 0)
    return total
