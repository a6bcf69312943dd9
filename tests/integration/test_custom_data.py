"""Any labelled text by configuration alone: a 7-label CSV with its own columns, and multi-label GoEmotions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.registry import connection
from tests.conftest import SHARED_DATA
from tests.synthetic_text import SEVEN, THINGS, WORDS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_seven_label_csv_with_own_columns_and_no_splits(tiny_config, tmp_path: Path, project: Path) -> None:
    from flows.training import training_flow

    rows = [
        {"review_text": f"the {thing} left me {WORDS[label]} today", "feeling": label, "id": i}
        for i, (label, thing) in enumerate(itertools.product(SEVEN, THINGS))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "reviews.csv", index=False)

    summary = training_flow(
        tiny_config(
            f"data.source={tmp_path / 'reviews.csv'}",
            "data.text_column=review_text",
            "data.label_column=feeling",
            "data.labels=null",
            "train.learning_rate=1e-2",
            "train.epochs=4",
        )
    )
    assert summary["rows"] == {"train": 112, "validation": 14, "test": 14}  # stratified 80/10/10 of 140
    label_map = json.loads((project / "artifacts" / "latest" / "prepared" / "label_map.json").read_text())
    assert label_map == {"labels": SEVEN, "multi_label": False}
    test = pd.read_json(project / "artifacts" / "latest" / "prepared" / "test.jsonl", lines=True)
    assert sorted(test["label"].value_counts().tolist()) == [2] * 7  # every label in test, equally
    assert summary["version"] == "1"
    tags = connection.client(tiny_config().registry).get_model_version("emotion-classifier", "1").tags
    assert tags["labels"] == ",".join(SEVEN)


def goemotions_subset(dst: Path, train_rows: int = 600) -> Path:
    """A small GoEmotions folder in its own format (the real rows, read from ../shared)."""
    dst.mkdir()
    (dst / "labels.txt").write_text((SHARED_DATA / "goemotions" / "labels.txt").read_text())
    for name, n in (("train.tsv", train_rows), ("dev.tsv", 120), ("test.tsv", 120)):
        lines = (SHARED_DATA / "goemotions" / name).read_text(encoding="utf-8").splitlines()[:n]
        (dst / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def goemotions_settings(source: Path) -> list[str]:
    """A GoEmotions folder as multi-label data with its 28 labels; the subset's rarest labels pass the checks."""
    labels = (source / "labels.txt").read_text().split()
    return [
        f"data.source={source}",
        "data.multi_label=true",
        f"data.labels={labels}",
        "checks.severity.label_min_count=off",
        "checks.severity.class_balance=off",
    ]


@pytest.mark.requires((SHARED_DATA / "goemotions").exists(), "../shared/data/goemotions")
def test_goemotions_multi_label_end_to_end(tiny_config, tmp_path: Path, project: Path) -> None:
    from flows.training import training_flow
    from pipeline.model.predict import Predictor

    source = goemotions_subset(tmp_path / "goemotions")
    labels = (source / "labels.txt").read_text().split()
    summary = training_flow(tiny_config(*goemotions_settings(source), "train.learning_rate=1e-2", "train.epochs=2"))

    assert summary["rows"] == {"train": 600, "validation": 120, "test": 120}
    assert {"micro_f1", "macro_f1", "weighted_f1", "f1_neutral"} <= set(summary["metrics"]) and "ece" not in summary[
        "metrics"
    ]
    assert summary["version"] == "1"
    model_dir = project / "artifacts" / "latest" / "model"
    saved = json.loads((model_dir / "calibration.json").read_text())
    assert saved["method"] == "per-label thresholds" and len(saved["thresholds"]) == 28
    prediction = Predictor(model_dir).predict(["thank you so much, this made my day"])[0]
    assert prediction.labels and set(prediction.labels) <= set(labels)
    assert abs(sum(prediction.probabilities.values()) - 1.0) > 1e-3  # independent sigmoids, not a softmax

    from transformers import pipeline as hf_pipeline

    scores = hf_pipeline("text-classification", model=str(model_dir), top_k=None)("what a lovely surprise")[0]
    assert len(scores) == 28 and {s["label"] for s in scores} == set(labels)


@pytest.mark.requires((SHARED_DATA / "goemotions").exists(), "../shared/data/goemotions")
def test_multi_label_distillation_on_more_data_than_a_flow_run_parameter_holds(
    tiny_config, tmp_path: Path, project: Path
) -> None:
    """The teachers' subflow gets the prepared data's folder: multi-label splits encode to JSON, and a Prefect
    server refuses a flow run whose parameters exceed 512 KB (the full GoEmotions is 6 MB)."""
    from flows.training import training_flow

    source = goemotions_subset(tmp_path / "goemotions", train_rows=8000)
    summary = training_flow(
        tiny_config(*goemotions_settings(source), "train.max_steps=2", "train.distill.teacher_seeds=[1]")
    )

    prepared = Path(summary["run_dir"]) / "prepared"
    assert sum(path.stat().st_size for path in prepared.glob("*.jsonl")) > 524_288
    assert [teacher["name"] for teacher in summary["teachers"]] == ["seed1"]
    assert summary["version"] == "1"
    version = connection.client(tiny_config().registry).get_model_version("emotion-classifier", "1")
    assert version.run_id == summary["run_id"]  # the student's run
