"""Runs in one project are isolated: two `emotion run` processes at once on different data each register their own
model and snapshot; a killed run is resumed only by `--resume`, never by another run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.ingest import sample_data_dir
from pipeline.registry import connection, run_log
from tests.conftest import BIN, PARAMS, cli_env, tiny_overrides

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"
MARKER = "honestly, "  # every text of the second source starts with it


def sample_rows() -> pd.DataFrame:
    frames = []
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(sample_data_dir() / f"{split}.txt", sep=";", names=["text", "label"], quoting=3)
        frames.append(frame.assign(split=split))
    return pd.concat(frames, ignore_index=True)


def two_sources(folder: Path) -> tuple[Path, Path]:
    """The sample data as a CSV, and a second CSV with other texts (marked) and another label distribution."""
    rows = sample_rows()
    first, second = folder / "first.csv", folder / "second.csv"
    rows.to_csv(first, index=False)
    other = rows.assign(text=MARKER + rows["text"])
    joy_train = other[(other["label"] == "joy") & (other["split"] == "train")]
    other.drop(joy_train.index[: len(joy_train) // 2]).to_csv(second, index=False)
    return first, second


def emotion(
    project: Path, model_dir: Path, *args: str, extra: tuple[str, ...] = (), prefect_api: str | None = None
) -> subprocess.Popen:
    """`emotion ARGS` in a session of its own, with its own temporary Prefect server unless ``prefect_api``."""
    overrides = tiny_overrides(project, model_dir, *extra)
    command = [str(BIN / "emotion"), *args, "--config", str(PARAMS)] + [x for o in overrides for x in ("--set", o)]
    env = cli_env(prefect_api, OMP_NUM_THREADS="1", PREFECT_HOME=str(project.parent / "prefect"))
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return subprocess.Popen(  # a session of its own: a kill reaches the ephemeral Prefect server too
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot_texts(project: Path, data_hash: str) -> list[str]:
    """The texts of the snapshot a DVC directory hash names, read from the project's DVC cache."""
    cache = project / ".dvc" / "cache" / "files" / "md5"
    entries = json.loads((cache / data_hash[:2] / data_hash[2:]).read_text())
    (md5,) = [entry["md5"] for entry in entries if entry["relpath"].endswith(".jsonl")]
    return pd.read_json(cache / md5[:2] / md5[2:], lines=True)["text"].tolist()


@pytest.mark.fresh_registry  # both runs set the new store up at once, as two first runs of a clone would
def test_two_runs_at_once_on_different_data_register_their_own_models(
    project: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    sources = two_sources(tmp_path)
    procs = [emotion(project, tiny_model_dir, "run", "--json", extra=(f"data.source={s}",)) for s in sources]
    first, second = (finish(proc) for proc in procs)

    cfg_overrides = tiny_overrides(project, tiny_model_dir)
    from pipeline.config import load_config

    client = connection.client(load_config(PARAMS, cfg_overrides, environ={}).registry)
    digests = []
    for summary, marked in ((first, False), (second, True)):
        run_dir = project / "artifacts" / "runs" / summary["run_id"]
        assert Path(summary["run_dir"]) == run_dir and (run_dir / "model" / "config.json").is_file()
        version = client.get_model_version(MODEL, summary["version"])
        assert version.run_id == summary["run_id"]
        downloaded = run_log.download_model(f"models:/{MODEL}/{summary['version']}", tmp_path / f"v{version.version}")
        weights = sha256(downloaded / "model.safetensors")
        assert weights == sha256(run_dir / "model" / "model.safetensors")  # registered what this run trained
        digests.append(weights)

        assert version.tags["data_hash"] == summary["data_hash"]
        texts = snapshot_texts(project, summary["data_hash"])
        assert len(texts) == sum(summary["rows"].values()) and {t.startswith(MARKER) for t in texts} == {marked}
        prepared = pd.read_json(run_dir / "prepared" / "train.jsonl", lines=True)["text"]
        assert {t.startswith(MARKER) for t in prepared} == {marked}  # trained on its own snapshot, not data/
    assert digests[0] != digests[1]
    spans = [client.get_run(summary["run_id"]).info for summary in (first, second)]
    assert spans[0].start_time < spans[1].end_time and spans[1].start_time < spans[0].end_time  # they overlapped
    assert first["data_hash"] != second["data_hash"]
    assert (project / "artifacts" / "latest").resolve() in {Path(first["run_dir"]), Path(second["run_dir"])}
    assert not (project / "artifacts" / "locks" / "project.lock.holder.json").exists()


def test_a_killed_run_is_resumed_by_resume_only(project: Path, tiny_model_dir: Path, prefect_api: str) -> None:
    settings = ("train.epochs=3", "train.eval_every=5")
    victim = emotion(project, tiny_model_dir, "run", "--json", extra=settings)
    runs = project / "artifacts" / "runs"
    deadline = time.monotonic() + 900
    while not list(runs.glob("*/checkpoints/checkpoint.pt")) and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # mid-training, with the ephemeral Prefect server it started
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (killed,) = [path.name for path in runs.iterdir()]
    assert not (project / "artifacts" / "latest").exists()  # a killed run publishes nothing

    shared = {"extra": settings, "prefect_api": prefect_api}  # after the kill: no temporary server per run
    fresh = finish(emotion(project, tiny_model_dir, "run", "--json", **shared))
    fresh_dir = Path(fresh["run_dir"])
    assert fresh["run_id"] != killed
    assert json.loads((fresh_dir / "training_summary.json").read_text())["resumed_from_step"] == 0  # not another's
    assert (runs / killed / "checkpoints" / "checkpoint.pt").is_file()

    resumed = finish(emotion(project, tiny_model_dir, "run", "--json", "--resume", killed, **shared))
    assert resumed["run_id"] == killed and Path(resumed["run_dir"]) == runs / killed
    training = json.loads((runs / killed / "training_summary.json").read_text())
    assert training["resumed_from_step"] >= 5 and training["steps"] == fresh["training"]["steps"]
    assert not (runs / killed / "checkpoints" / "checkpoint.pt").exists()
    assert (project / "artifacts" / "latest").resolve() == runs / killed

    refused = emotion(project, tiny_model_dir, "run", "--resume", killed, **shared)
    _, err = refused.communicate(timeout=600)
    assert refused.returncode == 2 and f"run {killed} has finished" in err
