"""Training survives a kill (resume gives the same model), a Prefect retry resumes, and DDP under torchrun agrees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, PARAMS, REPO, free_port, tiny_overrides

pytestmark = pytest.mark.slow

TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
from pipeline.data import encode
from pipeline.data import ingest
from pipeline.config import DataConfig, ModelConfig, TrainConfig
from pipeline.training.train import train
frame = ingest.normalize(ingest.read_source(DataConfig()))
data = encode.encode(frame, ["sadness", "joy", "love", "anger", "fear", "surprise"])
out = Path(sys.argv[2])
result = train(data, ModelConfig(name=sys.argv[1], max_length=64),
               TrainConfig(epochs=3, batch_size=4, learning_rate=1e-2, eval_every=40),
               out / "model", checkpoint_dir=out / "checkpoints")
(out / "result.json").write_text(json.dumps({"history": result.history, "digest": result.weights_digest,
                                             "resumed_from_step": result.resumed_from_step}))
"""


def run_training(model_dir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(model_dir), str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


def test_killed_training_resumes_to_the_same_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    reference = run_training(tiny_model_dir, tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]
    expected = json.loads((tmp_path / "reference" / "result.json").read_text())

    out = tmp_path / "interrupted"
    victim = run_training(tiny_model_dir, out)
    checkpoint = out / "checkpoints" / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # mid-training, right after the first checkpoint (step 40 of 360)
    assert victim.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be interrupted"
    assert not (out / "result.json").exists()

    resumed = run_training(tiny_model_dir, out)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    got = json.loads((out / "result.json").read_text())
    assert got["resumed_from_step"] >= 40
    assert got["history"] == expected["history"]  # every evaluation, before and after the kill
    assert got["digest"] == expected["digest"]  # the very same weights
    assert not checkpoint.exists()  # a finished run clears its checkpoint


def test_prefect_retry_of_training_resumes(prefect_harness, tiny_config, tmp_path: Path) -> None:
    from prefect import flow, task

    from pipeline import stages
    from pipeline.data.ingest import read_source

    cfg = tiny_config("train.epochs=3", "train.eval_every=20")
    frame = read_source(cfg.data)
    snapshot, _, labels, _ = stages.ingest_validated(cfg)
    prepared, _ = stages.prepare_stage(cfg, snapshot.frame, labels)
    failures = {"left": 1}

    def flaky_logger(row: dict) -> None:  # like a tracking server that drops once, after the first checkpoint
        if row["step"] >= 40 and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("tracking server unavailable")

    @task(retries=1, retry_delay_seconds=0)
    def train_with_flaky_tracking():
        return stages.train_stage(cfg, prepared, flaky_logger)

    @flow
    def one_training():
        return train_with_flaky_tracking()

    result = one_training()
    assert failures["left"] == 0 and len(frame) == 720
    assert result.resumed_from_step == 40  # the retry continued from the checkpoint written at step 40
    assert [row["step"] for row in result.history] == sorted({row["step"] for row in result.history})


def test_two_process_ddp_ranks_agree_and_only_rank0_saves(project: Path, tiny_model_dir: Path) -> None:
    overrides = tiny_overrides(project, tiny_model_dir, "train.epochs=2", "train.batch_size=16")
    args = ["--config", str(PARAMS)] + [x for item in overrides for x in ("--set", item)]
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for command in (["ingest"], ["prepare"]):
        subprocess.run([str(BIN / "emotion"), *command, *args], cwd=project, env=env, check=True, capture_output=True)

    done = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "emotion_cli",
            "train",
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if line.startswith("rank ")}
    assert set(lines) == {"rank 0/2", "rank 1/2"}
    digests = {rank: line.split("weights ")[1].split(";")[0] for rank, line in lines.items()}
    assert digests["rank 0/2"] == digests["rank 1/2"]  # DDP kept the replicas identical
    assert "saved to" in lines["rank 0/2"] and "saved to" not in lines["rank 1/2"]
    assert done.stderr.count("fine-tuning ") == 1 and done.stderr.count(" step ") == 2  # rank 0 logs, once per epoch
    assert (project / "artifacts" / "model" / "config.json").exists()
    summary = json.loads((project / "artifacts" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank"] == 0


def test_two_node_ddp_with_c10d_rendezvous_agrees_and_only_rank0_saves(project: Path, tiny_model_dir: Path) -> None:
    """Two `torchrun` agents as two nodes of one job (one process each), meeting at a c10d rendezvous on 127.0.0.1:
    the multi-node launch of docs/team-setup.md, with a shared project folder standing in for a shared filesystem."""
    overrides = tiny_overrides(project, tiny_model_dir, "train.epochs=2", "train.batch_size=16")
    args = ["--config", str(PARAMS)] + [x for item in overrides for x in ("--set", item)]
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for command in (["ingest"], ["prepare"]):
        subprocess.run([str(BIN / "emotion"), *command, *args], cwd=project, env=env, check=True, capture_output=True)

    endpoint = f"127.0.0.1:{free_port()}"
    launch = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    launch += ["--rdzv-endpoint", endpoint, "--rdzv-id", "emotion-test"]
    nodes = [
        subprocess.Popen(
            [*launch, "--node-rank", str(rank), "-m", "emotion_cli", "train", *args],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=900) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stdout[-2000:] + stderr[-4000:]
    lines = {line.split(":")[0]: line for out, _ in outputs for line in out.splitlines() if line.startswith("rank ")}
    assert set(lines) == {"rank 0/2", "rank 1/2"}  # one process per node, one job of two
    digests = {rank: line.split("weights ")[1].split(";")[0] for rank, line in lines.items()}
    assert digests["rank 0/2"] == digests["rank 1/2"]  # DDP kept the replicas identical across the nodes
    assert "saved to" in lines["rank 0/2"] and "saved to" not in lines["rank 1/2"]
    assert sum(err.count("fine-tuning ") for _, err in outputs) == 1  # rank 0 logs, on whichever node it is
    assert (project / "artifacts" / "model" / "config.json").exists()
    summary = json.loads((project / "artifacts" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank"] == 0
