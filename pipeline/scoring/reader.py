"""The texts to score, streamed chunk by chunk from files, folders or globs in any format ingest reads."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config import DataConfig
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.data.formats import Format

ROW_ID = "id"  # the output's id column: the input's id column, or the input row number


def input_files(specs: list[str], base_dir: Path = Path(".")) -> list[Path]:
    """Every file named by ``specs`` (files, folders of data files, globs), in order, each once."""
    from pipeline.data.formats import by_suffix, suffix_list

    found: list[Path] = []
    for spec in specs:
        path = base_dir / Path(spec).expanduser()
        if glob.has_magic(str(path)):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
            if not matches:
                raise PipelineError(f"no file matches {spec}")
            found += matches
        elif path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.is_file() and by_suffix(p.name) is not None]
            if not files:
                raise PipelineError(f"{path} holds no data files (suffixes {suffix_list()})")
            found += [p for p in files if not p.name.startswith(".")]
        elif path.is_file():
            found.append(path)
        else:
            raise PipelineError(f"input {spec} does not exist")
    return list(dict.fromkeys(p.resolve() for p in found))


def _file_format(path: Path, cfg: DataConfig) -> Format:
    """How ingest would read this file (format from data.format, else the suffix)."""
    from pipeline.data.formats import format_of

    return format_of(path, cfg.format, path)


def file_chunks(path: Path, cfg: DataConfig, chunk_size: int, id_column: str | None) -> Iterator[pd.DataFrame]:
    """One file's rows in chunks of ``chunk_size``, as frames with ``text`` and (if the file has it) ``id``."""
    from pipeline.data import formats

    fmt = _file_format(path, cfg)
    wanted = [cfg.text_column] + ([id_column] if id_column else [])
    source = formats.Stream(path, formats.read_options(cfg), chunk_size, wanted)
    try:
        for raw in formats.stream(fmt, source):
            if not fmt.labelled and cfg.text_column not in raw:
                raise PipelineError(
                    f"{path} has no text column '{cfg.text_column}' (columns: {list(raw.columns)}); "
                    "set data.text_column"
                )
            frame = raw.rename(columns={cfg.text_column: "text"})[["text"]].reset_index(drop=True)
            if id_column and id_column in raw:
                frame.insert(0, ROW_ID, raw[id_column].astype(str).to_numpy())
            frame.attrs[formats.BLANK_RECORDS] = formats.blank_records(raw)
            yield frame
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{path} is not {exc.encoding} text ({exc.reason} at byte {exc.start}); set data.encoding to the file's "
            "encoding, or auto"
        ) from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError(f"cannot read {path} as {fmt.name}: {exc}") from exc


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
    """The number of input rows for the progress bar: exact where the format knows it, lines otherwise."""
    from pipeline.data import formats

    options = formats.read_options(cfg)
    return sum(formats.count_rows(_file_format(path, cfg), path, options) for path in files)
