"""The shards of `emotion score`, called directly (no model, no CLI): a folder is resumed only with the manifest it
was scored under, a shard file is complete or absent, its row counts survive the round trip, and a failed run
leaves no folder that holds nothing to resume. `test_scoring.py` checks the same end to end with a model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.registry.model_spec import head_digest
from pipeline.scoring import shards

MANIFEST = {"inputs": [{"path": "in.csv", "size": 10}], "model_version": "3", "chunk_size": 100}


def frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"t{i}" for i in range(rows)], "joy": [i / 10 for i in range(rows)]})


def test_paths_of_the_parts_folder_and_its_shards(tmp_path: Path):
    assert shards.parts_dir(tmp_path / "out.csv") == tmp_path / "out.csv.parts"
    assert shards.shard_path(tmp_path, 7) == tmp_path / "part-00007.parquet"
    assert shards.shard_path(tmp_path, 123456) == tmp_path / "part-123456.parquet"


def test_fingerprint_names_size_mtime_and_head_digest(tmp_path: Path):
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n")
    os.utime(source, ns=(1_000_000_000, 2_000_000_000))
    assert shards.fingerprint(source) == {
        "path": str(source),
        "size": 11,
        "mtime_ns": 2_000_000_000,
        "head_sha256": head_digest(source),
    }


def test_a_new_folder_gets_the_manifest_and_nothing_to_resume(tmp_path: Path):
    parts = tmp_path / "deep" / "out.csv.parts"
    assert shards.prepare(parts, MANIFEST) == []
    assert sorted(p.name for p in parts.iterdir()) == ["manifest.json"]
    assert (parts / "manifest.json").read_text() == json.dumps(MANIFEST, indent=2)


def test_the_same_manifest_resumes_the_finished_shards_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    parts = tmp_path / "out.csv.parts"
    shards.prepare(parts, MANIFEST)
    for index in (12, 3, 100):
        shards.write_shard(parts, index, frame(), shards.Counts(3, 0))
    (parts / "part-00004.parquet.tmp").write_bytes(b"half written")  # a shard cut off mid-write is not done
    with caplog.at_level(logging.INFO, logger=shards.__name__):
        assert shards.prepare(parts, dict(MANIFEST)) == [3, 12, 100]
    assert caplog.messages == [f"resuming: 3 shards in {parts} are already scored"]


def test_the_same_manifest_with_no_shards_yet_resumes_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    parts = tmp_path / "out.csv.parts"
    shards.prepare(parts, MANIFEST)
    with caplog.at_level(logging.INFO, logger=shards.__name__):
        assert shards.prepare(parts, MANIFEST) == []
    assert caplog.messages == []


def test_another_manifest_starts_over_naming_what_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    parts = tmp_path / "out.csv.parts"
    shards.prepare(parts, MANIFEST)
    shards.write_shard(parts, 0, frame(), shards.Counts(3, 0))
    changed = {**MANIFEST, "model_version": "4", "chunk_size": 50, "added": True}
    with caplog.at_level(logging.INFO, logger=shards.__name__):
        assert shards.prepare(parts, changed) == []
    assert caplog.messages == [f"{parts} was scored with other added, chunk_size, model_version: starting over"]
    assert caplog.records[0].levelno == logging.WARNING
    assert sorted(p.name for p in parts.iterdir()) == ["manifest.json"]
    assert json.loads((parts / "manifest.json").read_text()) == changed


def test_a_manifest_that_only_lost_keys_starts_over_naming_the_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    parts = tmp_path / "out.csv.parts"
    shards.prepare(parts, {**MANIFEST, "dropped": 1})
    with caplog.at_level(logging.WARNING, logger=shards.__name__):
        assert shards.prepare(parts, MANIFEST) == []
    assert caplog.messages == [f"{parts} was scored with other settings: starting over"]


def test_a_folder_without_a_manifest_is_not_touched(tmp_path: Path):
    parts = tmp_path / "out.csv.parts"
    parts.mkdir()
    (parts / "mine.txt").write_text("someone's file")
    with pytest.raises(PipelineError) as err:
        shards.prepare(parts, MANIFEST)
    assert str(err.value) == f"{parts} exists but holds no manifest.json: it is not a scoring run's; move it away"
    assert (parts / "mine.txt").read_text() == "someone's file" and len(list(parts.iterdir())) == 1


def test_a_shard_round_trips_its_rows_and_counts(tmp_path: Path):
    rows = frame(4).set_axis([10, 11, 12, 13])  # the index is not written
    path = shards.write_shard(tmp_path, 2, rows, shards.Counts(rows_read=6, skipped=2, blank=1))
    assert path == tmp_path / "part-00002.parquet" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    pd.testing.assert_frame_equal(pd.read_parquet(path), rows.reset_index(drop=True))
    metadata = pq.read_schema(path).metadata
    assert {key: metadata[key] for key in (b"emotion.rows_read", b"emotion.skipped", b"emotion.blank_records")} == {
        b"emotion.rows_read": b"6",
        b"emotion.skipped": b"2",
        b"emotion.blank_records": b"1",
    }
    assert b"pandas" in metadata  # pandas' own schema is kept beside the counts
    assert shards.shard_counts(path) == shards.Counts(6, 2, 1)


def test_counts_default_to_no_blank_records_and_a_foreign_parquet_to_zeros(tmp_path: Path):
    assert shards.Counts(5, 1) == (5, 1, 0)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"text": ["a"]}), plain)
    assert shards.shard_counts(plain) == shards.Counts(0, 0, 0)
    pq.write_table(pa.table({"text": ["a"]}).replace_schema_metadata({b"emotion.skipped": b"4"}), plain)
    assert shards.shard_counts(plain) == shards.Counts(0, 4, 0)


def test_a_failed_run_keeps_the_folder_only_when_a_shard_was_scored(tmp_path: Path):
    empty, started = tmp_path / "a.parts", tmp_path / "b.parts"
    shards.prepare(empty, MANIFEST)
    shards.prepare(started, MANIFEST)
    shards.write_shard(started, 0, frame(), shards.Counts(3, 0))
    for parts in (empty, started):
        with pytest.raises(KeyboardInterrupt), shards.kept_only_with_shards(parts):
            raise KeyboardInterrupt  # BaseException: Ctrl-C too
    assert not empty.exists() and (started / "part-00000.parquet").exists()


def test_a_run_that_ends_well_or_never_made_its_folder_is_left_as_it_is(tmp_path: Path):
    parts = tmp_path / "a.parts"
    shards.prepare(parts, MANIFEST)
    with shards.kept_only_with_shards(parts):
        pass
    assert (parts / "manifest.json").exists()
    with pytest.raises(PipelineError, match="bad input"), shards.kept_only_with_shards(tmp_path / "never.parts"):
        raise PipelineError("bad input")
    assert not (tmp_path / "never.parts").exists()
