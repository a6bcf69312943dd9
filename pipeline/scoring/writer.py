"""The scored rows as one output file (Parquet, CSV or JSONL by suffix), written shard by shard and swapped in."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TextIO

import pandas as pd

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
NUL = "\x00"


def output_format(output: Path) -> str:
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise PipelineError(f"cannot tell the output format of {output}: end it in {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _for_text_format(frame: pd.DataFrame, separator: str) -> pd.DataFrame:
    """CSV cells cannot hold lists: multi-label decisions are joined with the label separator."""
    if "labels" in frame:
        frame = frame.assign(labels=frame["labels"].map(lambda v: separator.join(v)))
    return frame


def _without_nul(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The frame with NUL characters removed from its text cells, and how many cells held one.

    A CSV has no way to escape NUL, and a file holding one is taken for a binary file by every reader (emotion's
    own included), so the output could not be read back. The tokenizer drops NUL before the model sees a text, so
    the scores stand for the text without it; JSONL and Parquet keep texts exactly."""
    held = 0
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        found = frame[column].map(lambda v: isinstance(v, str) and NUL in v).astype(bool)
        if found.any():
            held += int(found.sum())
            cleaned = frame.loc[found, column].map(lambda v: v.replace(NUL, ""))
            frame = frame.assign(**{column: frame[column].where(~found, cleaned)})
    return frame, held


def _append(fh: TextIO, frame: pd.DataFrame, fmt: str, first: bool, separator: str) -> int:
    """Append the frame's rows; returns how many CSV cells had NUL characters removed."""
    if fmt == "csv":
        frame, held = _without_nul(_for_text_format(frame, separator))
        frame.to_csv(fh, header=first, index=False, lineterminator="\n")
        return held
    for record in frame.to_dict(orient="records"):
        if "labels" in record:
            record["labels"] = list(record["labels"])
        fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return 0


def concatenate(shards: list[Path], output: Path, label_separator: str = ",") -> Counter[str]:
    """Write every shard, in order, into ``output`` (via a temporary file and a rename); returns the label counts.

    One shard is in memory at a time.
    """
    import pyarrow.parquet as pq

    fmt = output_format(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    counts: Counter[str] = Counter()
    try:
        if fmt == "parquet":
            writer = None
            for shard in shards:
                table = pq.read_table(shard).replace_schema_metadata(None)
                if table.num_rows == 0:  # a chunk of invalid texts only
                    continue
                counts.update(table.column("label").to_pylist())
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                raise PipelineError("nothing was scored: every input text was empty or invalid")
            writer.close()
        else:
            held = 0
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                for shard in shards:
                    frame = pd.read_parquet(shard)
                    if frame.empty:
                        continue
                    held += _append(fh, frame, fmt, not counts, label_separator)
                    counts.update(frame["label"].tolist())
            if not counts:
                raise PipelineError("nothing was scored: every input text was empty or invalid")
            if held:
                log.warning(
                    "%s: removed NUL characters from %d cell(s), as CSV cannot carry them (the model never saw "
                    "them); write .jsonl or .parquet to keep texts byte for byte",
                    output,
                    held,
                )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def finish(parts: Path, shards: list[Path], output: Path, label_separator: str = ",") -> Counter[str]:
    """Concatenate the shards into ``output`` and remove the parts folder, also when nothing was scored: every
    shard was read, so a rerun could only fail the same way."""
    try:
        counts = concatenate(shards, output, label_separator)
    except PipelineError:
        shutil.rmtree(parts, ignore_errors=True)
        raise
    shutil.rmtree(parts)
    return counts
