"""The Prefect training flow end to end: real DVC repo, real sqlite MLflow store, Prefect test harness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DataValidationError
from pipeline.registry import connection, model_versions
from pipeline.registry.versioning import dvc_hash
from tests.conftest import (
    BIN,
    FLOW_TRAINING,
    PARAMS,
    cli_env,
    copy_sample,
    one_torch_thread,
    tiny_overrides,
    write_cue_folder,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MODEL = "emotion-classifier"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def versions(cfg) -> list[str]:
    client = connection.client(cfg.registry)
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))


def champion(cfg) -> str | None:
    found = model_versions.version_by_alias(cfg.registry, connection.client(cfg.registry), "champion")
    return str(found.version) if found else None


def test_flow_trains_gates_registers_with_lineage(tiny_config, project: Path) -> None:
    from flows.training import training_flow

    cfg = tiny_config()
    summary = training_flow(cfg)

    assert summary["gate"]["passed"], summary["gate"]
    assert summary["version"] == "1" and summary["aliases"] == ["challenger", "champion"]
    assert summary["rows"] == {"train": 480, "validation": 120, "test": 120}
    client = connection.client(cfg.registry)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "1"
    assert version.tags["data_hash"] == dvc_hash(project / "data.dvc") == summary["data_hash"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert version.tags["git_commit"].startswith(head)
    assert "**Labels** (6): sadness, joy, love, anger, fear, surprise" in version.description

    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.tags["data_hash"] == summary["data_hash"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["accuracy"], abs=1e-4)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/classification_report.txt",
        "evaluation/metrics.json",
        "evaluation/training_curve.png",
    } <= logged
    assert "reports/validation_report.md" in {a.path for a in client.list_artifacts(run.info.run_id, "reports")}

    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(
        pd.DataFrame({"text": ["i feel wonderful today", "this makes me furious"]})
    )
    assert list(served["label"].isin(LABELS)) == [True, True]
    assert served[[f"prob_{label}" for label in LABELS]].sum(axis=1).round(4).tolist() == [1.0, 1.0]

    from transformers import pipeline as hf_pipeline

    run_dir = project / "artifacts" / "runs" / summary["run_id"]
    assert Path(summary["run_dir"]) == run_dir and (project / "artifacts" / "latest").resolve() == run_dir
    scores = hf_pipeline("text-classification", model=str(run_dir / "model"), top_k=None)("i am scared")
    assert sorted(s["label"] for s in scores[0]) == sorted(LABELS)
    assert (run_dir / "plots" / "confusion_matrix.png").stat().st_size > 1000


REAL_FLOORS = ["gate.min_accuracy=0.8", "gate.min_macro_f1=0.8", "gate.min_class_f1=0.6", "gate.max_ece=0.15"]


def test_flow_learns_cue_words_and_clears_real_gate_floors(project: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Training must learn, not just run: generated cue-word texts, the gate's real floors on accuracy, macro-F1,
    every class's F1 and calibration. (The behaviour floors stay off: natural sentences are not in this data.)"""
    from flows.training import training_flow
    from pipeline.config import load_config

    source = write_cue_folder(tmp_path / "cues", {"train": 600, "validation": 120, "test": 120})
    overrides = tiny_overrides(project, tiny_model_dir, *FLOW_TRAINING, f"data.source={source}", *REAL_FLOORS)
    cfg = load_config(PARAMS, overrides, environ={})
    assert (cfg.gate.min_accuracy, cfg.gate.min_macro_f1, cfg.gate.max_ece) == (0.8, 0.8, 0.15)
    with one_torch_thread():
        summary = training_flow(cfg)

    assert summary["gate"]["passed"], summary["gate"]["reasons"]
    assert summary["version"] == "1" and summary["aliases"] == ["challenger", "champion"] and champion(cfg) == "1"
    assert summary["metrics"]["accuracy"] >= 0.8 and summary["metrics"]["macro_f1"] >= 0.8, summary["metrics"]
    assert all(r.startswith("pass") for r in summary["gate"]["reasons"] if "accuracy" in r or "macro_f1" in r)
    run = connection.client(cfg.registry).get_run(summary["run_id"])
    assert run.data.metrics["test_accuracy"] >= 0.8 and run.data.metrics["test_macro_f1"] >= 0.8


def test_failing_gate_registers_challenger_and_keeps_champion(tiny_config) -> None:
    from flows.training import training_flow

    first = training_flow(tiny_config())
    assert first["gate"]["passed"]
    second = training_flow(tiny_config("gate.min_macro_f1=1.0"))

    assert not second["gate"]["passed"]
    assert second["champion_before"] == "1"
    assert any(r.startswith("FAIL  macro_f1:") for r in second["gate"]["reasons"])
    assert any("macro_f1 vs champion" in r for r in second["gate"]["reasons"])  # the champion was re-scored
    cfg = tiny_config()
    assert versions(cfg) == ["1", "2"]
    assert champion(cfg) == "1"
    assert (
        str(model_versions.version_by_alias(cfg.registry, connection.client(cfg.registry), "challenger").version) == "2"
    )
    assert connection.client(cfg.registry).get_model_version(MODEL, "2").tags["gate"] == "failed"


def corrupt(folder: Path) -> Path:
    """Unknown label, a blank text, and no test split."""
    with (folder / "train.txt").open("a") as fh:
        fh.write("i am bored out of my mind;boredom\n   ;joy\n")
    (folder / "test.txt").unlink()
    return folder


def test_corrupted_data_stops_at_validation_and_registers_nothing(tiny_config, tmp_path: Path, project: Path) -> None:
    from flows.training import training_flow

    good = training_flow(tiny_config())
    assert good["gate"]["passed"]
    bad = corrupt(copy_sample(tmp_path / "bad"))
    tracked = [project / "data" / "snapshot.jsonl", project / "data.dvc", *sorted((project / "dvc-remote").rglob("*"))]
    before = {path: path.read_bytes() for path in tracked if path.is_file()}

    with pytest.raises(DataValidationError) as caught:
        training_flow(tiny_config(f"data.source={bad}"))

    assert {path: path.read_bytes() for path in tracked if path.is_file()} == before  # the refused data went nowhere
    assert sorted((project / "dvc-remote").rglob("*")) == tracked[2:]
    assert not list(project.glob("data.staging-*"))

    failed = {c.name: c for c in caught.value.report.failed}
    assert set(failed) == {"text not blank", "label in declared set", "every split present"}
    assert failed["label in declared set"].unexpected_count == 1
    assert failed["label in declared set"].examples[0]["text"] == "i am bored out of my mind"
    assert "missing split(s): test" in failed["every split present"].detail
    cfg = tiny_config()
    failed_runs = connection.client(cfg.registry).search_runs(
        [connection.experiment_id(cfg.registry, connection.client(cfg.registry))], "attributes.status = 'FAILED'"
    )
    assert len(failed_runs) == 1 and failed_runs[0].data.tags["data_source"] == str(bad)
    failed_dir = project / "artifacts" / "runs" / failed_runs[0].info.run_id
    report = (failed_dir / "reports" / "validation_report.md").read_text()  # the refused run's report, in its folder
    assert "| label in declared set | FAIL | 1 |" in report
    assert versions(cfg) == ["1"] and champion(cfg) == "1"
    latest = project / "artifacts" / "latest"
    assert latest.resolve() == Path(good["run_dir"])  # a failed run does not move latest
    assert (latest / "prepared" / "test.jsonl").read_text() != ""  # the good run's outputs kept


def test_cli_refuses_corrupted_data_without_traceback(
    tmp_path: Path, project: Path, tiny_model_dir: Path, prefect_api: str
) -> None:
    bad = corrupt(copy_sample(tmp_path / "bad"))
    args = [str(BIN / "emotion"), "run", "--config", str(PARAMS)]
    for item in tiny_overrides(project, tiny_model_dir, f"data.source={bad}"):
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, env=cli_env(prefect_api), timeout=300)

    assert done.returncode == 3, done.stderr[-2000:]
    assert "error: data validation failed" in done.stderr
    assert "x label in declared set (1 rows)" in done.stderr and "missing split(s): test" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project / "mlflow" / "artifacts").exists() or not list((project / "mlflow").rglob("MLmodel"))
