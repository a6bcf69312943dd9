"""`emotion score --engine ray` on a real two-node Ray cluster (head and worker as separate processes on 127.0.0.1,
the ``ray_cluster`` fixture of tests/conftest.py) scores row for row what the local engine scores; an unreachable
cluster is a clear error naming its address. The ONNX backend scores on the actors as well.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, PARAMS, free_port
from tests.integration.test_scoring import big_input
from tests.ray_cluster import RAY_ENV

pytestmark = pytest.mark.slow


def score(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    sets = ["--set", f"project_dir={inp.parent}", "--set", "score.precision=fp32", "--set", "score.batch_size=16"]
    command = [str(BIN / "emotion"), "score", str(inp), "-o", str(out), "--model", str(model), "--json"]
    return subprocess.run(
        [*command, "--chunk-size", "100", "--config", str(PARAMS), *sets, *extra],
        cwd=inp.parent,
        env=RAY_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ray_engine_on_two_nodes_matches_the_local_engine_row_for_row(
    ray_cluster: str, tmp_path: Path, learned_model_dir: Path
) -> None:
    inp = big_input(tmp_path / "in.csv", 1)
    frame = pd.read_csv(inp).head(400).assign(n=range(400))
    frame.loc[[7, 250], "text"] = ""  # skipped by both engines (checks.severity.text_not_blank)
    frame.to_csv(inp, index=False)
    skip = ("--set", "checks.severity.text_not_blank=warning", "--set", "checks.severity.text_not_null=warning")

    local = score(inp, tmp_path / "local.parquet", learned_model_dir, *skip)
    assert local.returncode == 0, local.stderr[-3000:]
    ray = score(inp, tmp_path / "ray.parquet", learned_model_dir, "--engine", "ray", "--address", ray_cluster, *skip)
    assert ray.returncode == 0, ray.stderr[-3000:]

    summary = json.loads(ray.stdout)
    assert summary["engine"] == "ray" and (summary["rows_read"], summary["skipped_invalid"]) == (400, 2)
    assert len(summary["ray_nodes"]) == 2  # the head and the worker node both scored rows
    expected, got = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    assert list(got.columns) == list(expected.columns) and len(got) == 398
    probs = [c for c in expected.columns if c.startswith("p_")]
    pd.testing.assert_frame_equal(got.drop(columns=probs), expected.drop(columns=probs))
    assert np.abs(got[probs].to_numpy() - expected[probs].to_numpy()).max() < 1e-6
    assert json.loads(local.stdout)["engine"] == "local" and not any(tmp_path.glob("*.parts"))

    # the actors build the torch-free scorer too, reading the ONNX export by path as they read the model folder
    onnx = score(
        inp,
        tmp_path / "onnx.parquet",
        learned_model_dir,
        "--engine",
        "ray",
        "--address",
        ray_cluster,
        "--backend",
        "onnx-fp32",
        *skip,
    )
    assert onnx.returncode == 0, onnx.stderr[-3000:]
    assert json.loads(onnx.stdout)["backend"] == "onnx-fp32"
    got = pd.read_parquet(tmp_path / "onnx.parquet")
    pd.testing.assert_frame_equal(got.drop(columns=probs), expected.drop(columns=probs))
    assert np.abs(got[probs].to_numpy() - expected[probs].to_numpy()).max() < 1e-4


def test_unreachable_cluster_is_an_error_naming_the_address(tmp_path: Path, learned_model_dir: Path) -> None:
    inp = big_input(tmp_path / "in.csv", 1)
    address = f"127.0.0.1:{free_port()}"
    done = score(inp, tmp_path / "out.parquet", learned_model_dir, "--engine", "ray", "--address", address)
    assert done.returncode == 2 and f"cannot connect to the Ray cluster at {address}" in done.stderr
    assert not (tmp_path / "out.parquet").exists()
