"""Snapshots are pushed to a DVC remote and any registered version's data comes back byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline.registry.versioning import dvc_hash
from tests.conftest import PARAMS, copy_sample, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_restore_data_of_a_registered_version_byte_for_byte(
    project: Path, tiny_model_dir: Path, tmp_path: Path, tiny_config, capsys
) -> None:
    from flows.training import training_flow

    first = training_flow(tiny_config("train.max_steps=2"))
    original = (project / "data" / "snapshot.jsonl").read_bytes()
    remote = project / "dvc-remote"
    assert any(p.is_file() for p in remote.rglob("*")), "ingest pushes the snapshot to the default remote"

    changed = copy_sample(tmp_path / "changed")
    with (changed / "train.txt").open("a") as fh:
        fh.write("i am feeling wonderfully content this evening;joy\n")
    second = training_flow(tiny_config("train.max_steps=2", f"data.source={changed}"))
    assert second["data_hash"] != first["data_hash"]
    assert (project / "data" / "snapshot.jsonl").read_bytes() != original

    shutil.rmtree(project / ".dvc" / "cache")  # as on a fresh clone: the data must come from the remote
    args = ["restore-data", first["version"], "--config", str(PARAMS)]
    for item in tiny_overrides(project, tiny_model_dir):
        args += ["--set", item]
    assert cli.main(args) == 0
    assert (project / "data" / "snapshot.jsonl").read_bytes() == original
    assert dvc_hash(project / "data.dvc") == first["data_hash"]
    assert f"hash {first['data_hash']}" in capsys.readouterr().out

    pointer = (project / "data.dvc").read_bytes()
    assert cli.main(["restore-data", "--hash", "0123456789abcdef0123456789abcdef.dir", *args[3:]]) == 2
    assert (project / "data.dvc").read_bytes() == pointer, "a failed pull leaves data.dvc as it was"
