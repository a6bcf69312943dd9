"""`emotion score --backend onnx-fp32 --model @champion`: a registered version is resolved and downloaded in a child
process, so the scoring process imports neither MLflow nor torch, and the registry's errors still reach the user
as the same one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import emotion_cli as cli
from pipeline.config import Config, load_config
from pipeline.registry import connection, model_versions, run_log
from pipeline.registry.model_spec import UnknownModel
from pipeline.scoring.job import score_files
from tests.conftest import PARAMS, REPO

pytestmark = pytest.mark.slow  # a real sqlite store with a version logged with its ONNX export (about 20 s)

MODEL = "emotion-classifier"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TEXTS = ["i feel wonderful today", "this makes me furious", "ok"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> Config:
    """One registered version, logged with its ONNX export (as `emotion run` does by default), the champion."""
    project = tmp_path_factory.mktemp("onnx-registry")
    cfg = load_config(PARAMS, [f"project_dir={project}", f"mlflow.lock_file={project}/mlflow/lock"], environ={})
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    logged = run_log.log_model(run_id, tiny_classifier_dir, LABELS, export_onnx=True)
    version = model_versions.register(cfg.registry, client, logged, run_id, {}, "card")
    model_versions.set_alias(cfg.registry, client, model_versions.CHAMPION, version)
    pd.DataFrame({"text": TEXTS}).to_csv(project / "in.csv", index=False)
    return cfg


def onnx_sets(cfg: Config) -> list[str]:
    return [f"project_dir={cfg.project_dir}", f"mlflow.lock_file={cfg.mlflow.lock_file}", "score.backend=onnx-fp32"]


SCORING_PROCESS = """
import json, sys
from pathlib import Path
from pipeline.config import load_config
from pipeline.scoring.job import score_files

project, params, sets = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
summary = score_files(load_config(params, sets, environ={}), [str(project / "in.csv")], project / "champion.parquet",
                      "@champion", overwrite=True)
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"mlflow", "torch", "transformers"})
print(json.dumps({"rows": summary.rows_scored, "version": summary.model_version, "heavy": heavy}))
"""


def test_the_scoring_process_imports_neither_mlflow_nor_torch(store: Config, tiny_classifier_dir: Path) -> None:
    project = Path(store.project_dir)
    argv = [sys.executable, "-c", SCORING_PROCESS, str(project), str(PARAMS), json.dumps(onnx_sets(store))]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rows": len(TEXTS), "version": "1", "heavy": []}
    assert not (project / "artifacts" / "onnx").exists()  # the version's logged export, not a new one
    from_folder = project / "folder.parquet"
    score_files(
        load_config(PARAMS, onnx_sets(store), environ={}),
        [str(project / "in.csv")],
        from_folder,
        str(tiny_classifier_dir),
    )
    columns = [f"p_{label}" for label in LABELS]
    champion, folder = pd.read_parquet(project / "champion.parquet"), pd.read_parquet(from_folder)
    np.testing.assert_allclose(champion[columns].to_numpy(), folder[columns].to_numpy(), atol=1e-5)
    assert set(champion["model_version"]) == {"1"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("@nosuch", f"error: '{MODEL}' has no @nosuch in "),
        ("9", f"error: version 9 of '{MODEL}' does not exist"),
        ("models:/other-model/1", "error: version 1 of 'other-model' does not exist"),
    ],
)
def test_a_missing_version_is_the_same_one_line_error(
    store: Config, spec: str, message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cli.QUIET_ENV.items():  # cli.main setdefault()s them: pin them so monkeypatch restores them
        monkeypatch.setenv(key, os.environ.get(key, value))
    project = Path(store.project_dir)
    out = project / "missing.parquet"
    sets = [item for value in onnx_sets(store) for item in ("--set", value)]
    logs = set((project / "artifacts" / "logs").glob("*"))
    assert cli.main(["score", str(project / "in.csv"), "-o", str(out), "--model", spec, *sets]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not (project / "missing.parquet.parts").exists()
    assert set((project / "artifacts" / "logs").glob("*")) == logs  # a refused job writes no log file


def test_a_failing_store_is_still_a_store_failure(store: Config) -> None:
    """The child's RegistryUnavailable is raised as one in the scoring process, never as 'no such alias'."""
    project = Path(store.project_dir)
    database = store.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME TO hidden_aliases")
    try:
        with pytest.raises(connection.RegistryUnavailable) as info:
            score_files(
                load_config(PARAMS, onnx_sets(store), environ={}),
                [str(project / "in.csv")],
                project / "broken.parquet",
                "@champion",
            )
    finally:
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE hidden_aliases RENAME TO registered_model_aliases")
    assert "failed to look up the alias 'champion'" in str(info.value)
    assert "Check that the store is reachable" in str(info.value) and not isinstance(info.value, UnknownModel)
