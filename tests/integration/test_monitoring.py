"""The drift-monitoring flow end to end: a real champion in a temp git + DVC project, Prefect harness, MLflow.

The champion (the tiny BERT) is trained once per module on a small sample of the emotion dataset written to a
temp folder; batches are held-out emotion test texts (in distribution), GoEmotions comments (shifted,
unlabelled) and shouted emotion texts with links and emoji (shifted, labelled).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.monitoring.champion import champion_snapshot, load_champion, snapshot_matches
from pipeline.monitoring.reference import log_reference, reference_texts
from pipeline.registry import connection, model_versions
from pipeline.registry.versioning import dvc_hash
from tests.conftest import BIN, PARAMS, SHARED_DATA, init_project, tiny_overrides

EMOTION = SHARED_DATA / "emotion"
GOEMOTIONS = SHARED_DATA / "goemotions"
MODEL = "emotion-classifier"


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which load_config_from_env honours: start clean."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.requires(EMOTION.is_dir() and GOEMOTIONS.is_dir(), "../shared/data/emotion and goemotions"),
]


def _lines(name: str) -> list[str]:
    return [line for line in (EMOTION / name).read_text().splitlines() if line.strip()]


def write_emotion_sample(root: Path) -> SimpleNamespace:
    """A small labelled source folder (600 train, 600 validation, 200 test) and three batches, from held-out rows."""
    rng = random.Random(0)
    data = root / "data"
    data.mkdir(parents=True)
    test = _lines("test.txt")
    rng.shuffle(test)
    (data / "train.txt").write_text("\n".join(rng.sample(_lines("train.txt"), 600)) + "\n")
    (data / "validation.txt").write_text("\n".join(rng.sample(_lines("val.txt"), 600)) + "\n")
    (data / "test.txt").write_text("\n".join(test[:200]) + "\n")
    in_distribution = root / "in_distribution.txt"
    in_distribution.write_text("\n".join(test[200:600]) + "\n")
    shifted = root / "shifted.txt"  # the same emotions, written like social media posts
    shouted = []
    for i, line in enumerate(test[600:900]):
        text, _, label = line.rpartition(";")
        shouted.append(f"{text.upper()}!!! 😡 see http://t.co/x{i} @user{i};{label}")
    shifted.write_text("\n".join(shouted) + "\n")
    return SimpleNamespace(data=data, in_distribution=in_distribution, shifted=shifted)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, prefect_harness):
    """A project whose champion (v1) was trained on the emotion sample."""
    from flows.training import training_flow

    root = tmp_path_factory.mktemp("monitoring")
    project = init_project(root / "project")
    files = write_emotion_sample(root)
    overrides = tiny_overrides(project, tiny_model_dir, f"data.source={files.data}", "monitor.embedding_plot=false")
    cfg = load_config(PARAMS, overrides, environ={})
    summary = training_flow(cfg)
    assert summary["version"] == "1" and "champion" in summary["aliases"], summary["gate"]
    return SimpleNamespace(project=project, overrides=overrides, cfg=cfg, summary=summary, **vars(files))


def versions(cfg) -> dict[str, object]:
    return {str(v.version): v for v in connection.client(cfg.registry).search_model_versions(f"name='{MODEL}'")}


def champion(cfg) -> str:
    return str(model_versions.version_by_alias(cfg.registry, connection.client(cfg.registry), "champion").version)


def monitoring_runs(cfg) -> list:
    client = connection.client(cfg.registry)
    experiment = client.get_experiment_by_name(cfg.monitor.experiment)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]) if experiment else []


def test_in_distribution_batch_no_drift_no_retraining_reference_cached(monitored) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.monitoring import monitoring_flow

    states = [
        monitoring_flow(
            batch=str(monitored.in_distribution), params=str(PARAMS), overrides=monitored.overrides, return_state=True
        )
        for _ in range(2)
    ]
    first, second = (state.result() for state in states)

    assert first["drift"] is False and first["drifted_features"] == [], first["reasons"]
    assert first["retraining"] == {"triggered": False, "reason": "no drift"}
    assert first["batch"]["rows"] == 400 and first["batch"]["labelled_rows"] == 400
    # the training flow logs the reference sample on its run, so monitoring needs no data access
    assert first["reference"]["rows"] == 600 and first["reference"]["provenance"].startswith("logged reference on run")
    assert first["champion"]["version"] == "1" and first["champion"]["data_hash"] == monitored.summary["data_hash"]
    assert second["scores"] == first["scores"]
    html = Path(first["report_path"])
    assert html.is_file() and html.is_relative_to(monitored.project / "artifacts" / "monitoring")
    assert json.loads((html.parent / "verdict.json").read_text())["drift"] is False

    with get_client(sync_client=True) as client:  # the second check reused the scored reference
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[states[1].state_details.flow_run_id]))
        )
    reference_runs = [r for r in runs if r.name.startswith("build-reference")]
    assert [r.state.name for r in reference_runs] == ["Cached"]
    artifact = Artifact.get("drift-check")
    assert artifact is not None and "no drift" in artifact.data

    logged = monitoring_runs(monitored.cfg)
    assert [r.data.tags["drift"] for r in logged] == ["false", "false"]
    assert logged[0].data.metrics["drift_score.sentence_embedding"] == pytest.approx(
        first["scores"]["sentence_embedding"], abs=1e-4
    )
    client = connection.client(monitored.cfg.registry)
    assert {a.path for a in client.list_artifacts(logged[0].info.run_id, "drift")} == {
        "drift/drift_report.html",
        "drift/verdict.json",
    }
    assert list(versions(monitored.cfg)) == ["1"]


def test_cli_json_verdict_on_goemotions_schedule_only(monitored) -> None:
    """`emotion monitor PATH --json` prints only the verdict on stdout; schedule_only reports without retraining."""
    from prefect.settings import PREFECT_API_URL

    args = [str(BIN / "emotion"), "monitor", str(GOEMOTIONS / "test.tsv"), "--json", "--config", str(PARAMS)]
    for item in [*monitored.overrides, "monitor.trigger=schedule_only", "monitor.batch_max_rows=400"]:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the harness's API: no second server
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["drift"] is True
    assert result["scores"]["sentence_embedding"] > 0.6
    assert {"length", "uppercase_share", "punctuation_share", "sentence_embedding"} <= set(result["drifted_features"])
    assert result["batch"]["rows"] == 400 and result["batch"]["labelled_rows"] == 0
    assert result["retraining"]["triggered"] is False and "schedule_only" in result["retraining"]["reason"]
    assert list(versions(monitored.cfg)) == ["1"] and champion(monitored.cfg) == "1"


def test_drift_triggers_gated_retraining_on_merged_data(monitored) -> None:
    """On drift the labelled rows are merged, DVC re-versions the data, and a failed gate keeps the champion."""
    from flows.monitoring import monitoring_flow

    v1 = versions(monitored.cfg)["1"]
    result = monitoring_flow(
        batch=str(monitored.shifted),
        params=str(PARAMS),
        overrides=[*monitored.overrides, "gate.min_macro_f1=1.0", "train.epochs=1"],
    )

    assert result["drift"] is True
    assert {"uppercase_share", "links_mentions", "non_ascii_share"} <= set(result["drifted_features"])
    retraining = result["retraining"]
    assert retraining["triggered"] and retraining["mode"] == "subflow", retraining
    assert retraining["gate_passed"] is False and retraining["aliases"] == ["challenger"]
    assert retraining["champion_before"] == "1" and retraining["version"] == "2"

    merged = Path(retraining["merged"]["folder"])
    assert merged.is_relative_to(monitored.project / "artifacts" / "merged")
    assert sum(retraining["merged"]["added"].values()) == 300 and retraining["merged"]["base_rows"] == 1400
    train = pd.read_json(merged / "train.jsonl", lines=True)
    assert train["text"].str.contains("http://t.co/").sum() == retraining["merged"]["added"]["train"]

    registered = versions(monitored.cfg)
    assert sorted(registered) == ["1", "2"] and champion(monitored.cfg) == "1"  # the gate failed: champion stays
    v2 = registered["2"]
    assert v2.tags["gate"] == "failed" and v2.tags["data_source"] == str(merged)
    assert v2.tags["data_hash"] == retraining["data_hash"] == dvc_hash(monitored.project / "data.dvc")
    assert v2.tags["data_hash"] != v1.tags["data_hash"]  # the merged data is a new DVC version
    logged = monitoring_runs(monitored.cfg)[-1]
    assert logged.data.tags["drift"] == "true" and logged.data.tags["champion_version"] == "1"


def test_reference_rebuilds_without_the_dvc_cache_and_prefers_a_logged_sample(monitored, tmp_path: Path) -> None:
    """A fresh process finds the champion's reference: logged sample > DVC cache > data_source (hash-checked)."""
    cfg = monitored.cfg
    champ = load_champion(cfg, tmp_path / "model")
    assert champ.version == "1" and champ.labels == cfg.data.labels

    logged, provenance = reference_texts(cfg, champ)  # the training flow logged a sample on its run
    assert provenance == f"logged reference on run {champ.run_id}" and len(logged) == 600

    client = connection.client(cfg.registry)
    artifacts = Path(client.get_run(champ.run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts / "reference")  # as for a run from before references were logged
    rows, provenance = reference_texts(cfg, champ)
    assert provenance.startswith("DVC cache") and len(rows) == 600 and set(rows["split"]) == {"validation"}
    assert rows["text"].tolist() == logged["text"].tolist()

    cache = monitored.project / ".dvc" / "cache"
    cache.rename(monitored.project / ".dvc" / "cache-away")
    try:
        rebuilt, provenance = reference_texts(cfg, champ)
    finally:
        (monitored.project / ".dvc" / "cache-away").rename(cache)
    assert provenance == f"data_source {monitored.data}"  # re-read and matched the recorded hash
    assert rebuilt["text"].tolist() == rows["text"].tolist()

    snapshot = pd.read_json(monitored.project / "data" / "snapshot.jsonl", lines=True, dtype=False)
    assert snapshot_matches(snapshot, dvc_hash(monitored.project / "data.dvc"))
    assert log_reference(cfg, client, champ.run_id, champion_snapshot(cfg, champ)[0]) == "reference/reference.parquet"
    relogged, provenance = reference_texts(cfg, champ)
    assert provenance == f"logged reference on run {champ.run_id}"
    assert relogged["text"].tolist() == rows["text"].tolist()
