"""Reading a past snapshot straight from a real DVC cache, and predicting the hash `dvc add` gives a snapshot folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.registry.versioning import dvc_cached_file, dvc_dir_hash, dvc_track
from tests.conftest import init_project

pytestmark = pytest.mark.slow


def test_dvc_dir_hash_is_the_hash_dvc_add_records(tmp_path: Path) -> None:
    project = init_project(tmp_path / "project")
    snapshot = project / "data" / "snapshot.jsonl"
    snapshot.parent.mkdir()
    snapshot.write_text('{"text": "i feel fine", "label": "joy", "split": "train"}\n', encoding="utf-8")
    assert dvc_dir_hash(snapshot) == dvc_track(project, snapshot.parent)

    snapshot.write_text('{"text": "i feel low", "label": "sadness", "split": "train"}\n', encoding="utf-8")
    assert dvc_dir_hash(snapshot) == dvc_track(project, snapshot.parent)  # follows the content


def test_dvc_cached_file_finds_a_past_version_and_none_where_there_is_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = init_project(tmp_path / "project")
    snapshot = project / "data" / "snapshot.jsonl"
    snapshot.parent.mkdir()
    first = '{"text": "i feel fine", "label": "joy", "split": "train"}\n'
    snapshot.write_text(first, encoding="utf-8")
    old = dvc_track(project, snapshot.parent)
    snapshot.write_text('{"text": "i feel low", "label": "sadness", "split": "train"}\n', encoding="utf-8")
    new = dvc_track(project, snapshot.parent)

    cached = dvc_cached_file(project, old, "snapshot.jsonl")
    assert cached is not None and cached.read_text(encoding="utf-8") == first  # the workspace moved on, the cache not
    assert dvc_cached_file(project, new, "snapshot.jsonl").read_bytes() == snapshot.read_bytes()

    assert dvc_cached_file(project, old, "other.jsonl") is None  # not in that folder
    assert dvc_cached_file(project, "0" * 32 + ".dir", "snapshot.jsonl") is None  # never cached here
    assert dvc_cached_file(project, "md5:" + "0" * 32, "snapshot.jsonl") is None  # a content hash, not DVC's
    assert dvc_cached_file(tmp_path / "no-dvc", old, "snapshot.jsonl") is None  # not a DVC project

    listing = next((project / ".dvc" / "cache").rglob("*.dir"))
    listing.write_text("not json")
    broken = listing.parent.name + listing.name
    with caplog.at_level(logging.WARNING, logger="pipeline.registry.versioning"):
        assert dvc_cached_file(project, broken, "snapshot.jsonl") is None
    assert "cannot read the DVC cache" in caplog.text
