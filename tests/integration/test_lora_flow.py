"""LoRA through the whole training flow: tiny BERT, real DVC repo, sqlite MLflow store, Prefect test harness."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.registry import connection

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def test_lora_run_registers_a_merged_model_and_logs_the_adapter(tiny_config, project: Path) -> None:
    from emotion_cli import format_summary
    from flows.training import training_flow

    cfg = tiny_config("train.peft.enabled=true", "train.peft.rank=4", "train.gradient_checkpointing=true")
    summary = training_flow(cfg)

    training = summary["training"]
    assert 0 < training["trainable_parameters"] < training["total_parameters"]
    written = json.loads((project / "artifacts" / "latest" / "training_summary.json").read_text())
    assert (written["trainable_parameters"], written["total_parameters"]) == (
        training["trainable_parameters"],
        training["total_parameters"],
    )
    share = 100 * training["trainable_parameters"] / training["total_parameters"]
    assert f"trainable of {training['total_parameters']:,} ({share:.2f}%)" in format_summary(summary)

    client = connection.client(cfg.registry)
    run = client.get_run(summary["run_id"])
    assert run.data.params["train.peft.enabled"] == "True"
    assert run.data.metrics["trainable_parameters"] == training["trainable_parameters"]
    adapter_files = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter_files

    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.registered_model}/{summary['version']}").predict(
        pd.DataFrame({"text": ["i feel wonderful today"]})
    )
    assert served["label"].isin(LABELS).all()
    assert served[[f"prob_{label}" for label in LABELS]].sum(axis=1).round(4).tolist() == [1.0]
