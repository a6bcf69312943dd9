"""Numbered shard files in ``OUT.parts/`` and the manifest that says whether they can be resumed.

A shard is written to a temporary name and renamed, so a file named ``part-NNNNN.parquet`` is always complete.
The manifest records what the shards were scored from (input files' size, mtime and first-MB digest, the model
version, the chunk size and the reading options); a run with different ones starts over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.registry.model_spec import head_digest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ROWS_READ = b"emotion.rows_read"  # input rows of the chunk, before invalid texts were skipped
SKIPPED = b"emotion.skipped"
BLANK = b"emotion.blank_records"


class Counts(NamedTuple):
    """A chunk's row counts, kept in its shard's metadata so a resumed run reports the whole job."""

    rows_read: int  # input rows of the chunk, before invalid texts were skipped
    skipped: int  # invalid texts skipped (checks.severity.text_not_blank)
    blank: int = 0  # records of only blank cells the reader left out (not rows)


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def shard_path(parts: Path, index: int) -> Path:
    return parts / f"part-{index:05d}.parquet"


def fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head_digest(path)}


def prepare(parts: Path, manifest: dict[str, Any]) -> list[int]:
    """Make ``parts`` ready for this run; returns the indexes of shards already scored (resume).

    A manifest that differs (input changed, another model version or chunk size) clears the folder first.
    """
    path = parts / MANIFEST
    if path.exists():
        previous = json.loads(path.read_text())
        if previous == manifest:
            done = sorted(int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet"))
            if done:
                log.info("resuming: %d shards in %s are already scored", len(done), parts)
            return done
        changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
        log.warning("%s was scored with other %s: starting over", parts, ", ".join(changed) or "settings")
        shutil.rmtree(parts)
    elif parts.exists():
        raise PipelineError(f"{parts} exists but holds no {MANIFEST}: it is not a scoring run's; move it away")
    parts.mkdir(parents=True)
    _write_atomic(path, json.dumps(manifest, indent=2).encode())
    return []


@contextlib.contextmanager
def kept_only_with_shards(parts: Path) -> Iterator[None]:
    """A run that fails or is interrupted keeps ``parts`` to resume from, unless no shard was scored yet: a
    folder holding only a manifest resumes nothing and would be left behind for the user to find."""
    try:
        yield
    except BaseException:
        if parts.is_dir() and not any(parts.glob("part-*.parquet")):
            shutil.rmtree(parts, ignore_errors=True)
        raise


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_shard(parts: Path, index: int, frame: pd.DataFrame, counts: Counts) -> Path:
    """One scored chunk as a complete Parquet file (row counts in its metadata), or nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    written = {ROWS_READ: counts.rows_read, SKIPPED: counts.skipped, BLANK: counts.blank}
    metadata = {**(table.schema.metadata or {}), **{key: str(value).encode() for key, value in written.items()}}
    path = shard_path(parts, index)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, path)
    return path


def shard_counts(path: Path) -> Counts:
    """The row counts of a finished shard."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    return Counts(*(int(metadata.get(key, b"0")) for key in (ROWS_READ, SKIPPED, BLANK)))
