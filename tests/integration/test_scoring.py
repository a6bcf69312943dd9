"""Batch scoring end to end: `emotion score` killed mid-run and resumed; the Prefect flow over a registry champion."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.ingest import sample_data_dir
from pipeline.scoring import local, shards, writer
from pipeline.scoring.job import score_files
from tests.conftest import BIN, PARAMS

CHUNK = 100


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which load_config_from_env honours: start clean."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def big_input(path: Path, copies: int) -> Path:
    texts = [line.rpartition(";")[0] for line in (sample_data_dir() / "train.txt").read_text().splitlines() if line]
    pd.DataFrame({"text": texts * copies}).to_csv(path, index=False)
    return path


def test_killed_run_resumes_without_rescoring_finished_shards(
    tmp_path: Path, learned_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = big_input(tmp_path / "in.csv", 12)
    rows = len(pd.read_csv(inp))
    out = tmp_path / "out.parquet"
    sets = ["--set", f"project_dir={tmp_path}", "--set", "score.precision=fp32"]
    command = [str(BIN / "emotion"), "score", str(inp), "-o", str(out), "--model", str(learned_model_dir)]
    process = subprocess.Popen(
        [*command, "--chunk-size", str(CHUNK), "--config", str(PARAMS), *sets],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = shards.parts_dir(out)
    deadline = time.monotonic() + 300
    while not shards.shard_path(parts, 2).exists():
        assert process.poll() is None and time.monotonic() < deadline, "the scorer ended before its 3rd shard"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert not out.exists() and 3 <= len(finished) < rows // CHUNK

    scored: list[int] = []
    real_score, real_finish = local.score_chunk, writer.finish
    monkeypatch.setattr(local, "score_chunk", lambda chunk, *a: scored.append(len(chunk)) or real_score(chunk, *a))
    mtimes_at_finish: dict[Path, int] = {}

    def finish(parts_dir: Path, paths: list[Path], output: Path, separator: str = ","):  # type: ignore[no-untyped-def]
        if not mtimes_at_finish:  # the resumed run (not the fresh one below)
            mtimes_at_finish.update({p: p.stat().st_mtime_ns for p in finished})
        return real_finish(parts_dir, paths, output, separator)

    monkeypatch.setattr(writer, "finish", finish)
    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", "score.precision=fp32"], environ={})
    summary = score_files(cfg, [str(inp)], out, str(learned_model_dir), chunk_size=CHUNK)

    assert mtimes_at_finish == finished  # the finished shards were kept, not rewritten
    assert sum(scored) == rows - len(finished) * CHUNK and summary.resumed_shards == len(finished)
    assert (summary.rows_read, summary.rows_scored) == (rows, rows) and not parts.exists()
    fresh = score_files(cfg, [str(inp)], tmp_path / "fresh.parquet", str(learned_model_dir), chunk_size=CHUNK)
    assert fresh.resumed_shards == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "fresh.parquet"))


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("backend", ["torch", "onnx-fp32"])  # onnx: the version is fetched in a child process
def test_flow_scores_with_the_champion_and_logs_an_mlflow_run(
    tmp_path: Path, learned_model_dir: Path, backend: str
) -> None:
    from flows.scoring import scoring_flow
    from pipeline.registry import connection, model_versions, run_log

    sets = [f"project_dir={tmp_path}", f"mlflow.lock_file={tmp_path}/mlflow/registry.lock", f"score.backend={backend}"]
    cfg = load_config(PARAMS, sets, environ={})
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    version = model_versions.register(
        cfg.registry, client, run_log.log_model(run_id, learned_model_dir, labels), run_id, {}, ""
    )
    model_versions.set_alias(cfg.registry, client, model_versions.CHAMPION, version)

    inp = big_input(tmp_path / "batch.csv", 1)
    rows = len(pd.read_csv(inp))
    result = scoring_flow(input=str(inp), cfg=cfg)

    output = Path(result["output"])
    assert output.parent == tmp_path / "artifacts" / "scores" and output.suffix == ".parquet"
    frame = pd.read_parquet(output)
    assert len(frame) == rows and set(frame["model_version"]) == {version} == {result["model_version"]}
    assert result["backend"] == backend
    assert set(frame["model_name"]) == {cfg.mlflow.registered_model}
    run = client.get_run(result["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "emotion-scoring"
    assert run.data.metrics["rows"] == rows and run.data.tags["model_version"] == version
    shares = [v for k, v in run.data.metrics.items() if k.startswith("label_share.")]
    assert sum(shares) == pytest.approx(1.0) and run.data.metrics["texts_per_second"] > 0
