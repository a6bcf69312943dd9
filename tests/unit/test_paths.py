"""Folder settings that would let the pipeline overwrite the project, the registry or its own data are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from tests.conftest import PARAMS


def config(project: Path, *extra: str):
    return load_config(PARAMS, [f"project_dir={project}", *extra], environ={})


@pytest.mark.parametrize(
    ("override", "key", "why"),
    [
        ("data.snapshot_dir=mlflow", "data.snapshot_dir", "MLflow store"),  # the reproduction: it held mlflow.db
        ("data.snapshot_dir=.", "data.snapshot_dir", "project folder"),
        ("data.snapshot_dir=", "data.snapshot_dir", "project folder"),
        ("data.snapshot_dir=..", "data.snapshot_dir", "contains it"),
        ("data.snapshot_dir=.git/data", "data.snapshot_dir", ".git"),
        ("train.checkpoint_dir=.dvc/ck", "train.checkpoint_dir", ".dvc"),
        ("data.snapshot_dir=dvc-remote", "data.snapshot_dir", "data.dvc_remote"),
        ("data.snapshot_dir=artifacts/data", "data.snapshot_dir", "inside artifacts_dir"),
        ("artifacts_dir=data/out", "artifacts_dir", "inside data.snapshot_dir"),
        ("mlflow.artifact_root=mlflow", "mlflow.artifact_root", "MLflow store"),
        ("monitor.merged_dir=artifacts", "monitor.merged_dir", "the same folder as"),
        ("train.checkpoint_dir=artifacts/merged/ck", "train.checkpoint_dir", "inside monitor.merged_dir"),
        ("mlflow.lock_file=registry.lock", "mlflow.lock_file", "project folder"),
        ("mlflow.lock_file=data/registry.lock", "mlflow.lock_file", "data.snapshot_dir"),
        ("data.dvc_remote=artifacts/remote", "data.dvc_remote", "inside artifacts_dir"),
    ],
)
def test_unsafe_write_folders_are_refused_naming_the_key(tmp_path: Path, override: str, key: str, why: str):
    with pytest.raises(PipelineError, match="set ") as err:
        config(tmp_path / "project", override)
    assert key in str(err.value) and why in str(err.value)


@pytest.mark.parametrize(
    "extra",
    [
        [],  # the shipped params.yaml
        ["data.snapshot_dir=/elsewhere/snapshots", "data.dvc_remote=s3://bucket/path"],
        ["mlflow.tracking_uri=sqlite:///store/mlflow.db", "mlflow.artifact_root=store/artifacts"],
        ["mlflow.tracking_uri=sqlite:///mlflow.db"],  # a database in the project folder protects only the project
        ["mlflow.lock_file=artifacts/registry.lock", "data.dvc_remote=null"],
    ],
)
def test_dedicated_folders_are_accepted(tmp_path: Path, extra: list[str]):
    assert config(tmp_path / "project", *extra).data.snapshot_dir
