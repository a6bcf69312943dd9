"""Passwords in URIs never reach MLflow params, the logs or model cards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import console
from pipeline.config import load_config
from pipeline.evaluation import model_card
from pipeline.evaluation.gate import GateVerdict
from pipeline.redact import redact
from tests.conftest import PARAMS

REMOTE = "https://bob:hunter2@dvc.example.com/store"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://bob:s3cr@t@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
        (f"remote {REMOTE} and ssh://a:b@c/d", "remote https://bob:***@dvc.example.com/store and ssh://a:***@c/d"),
        ("mysql://:pw@h/db", "mysql://:***@h/db"),
        ("http://host:5000/api", "http://host:5000/api"),  # a port is not a password
        ("sqlite:///mlflow/mlflow.db", "sqlite:///mlflow/mlflow.db"),
        ("s3://bucket/key@v1", "s3://bucket/key@v1"),
        ("no uri here: a:b@c", "no uri here: a:b@c"),
    ],
)
def test_redact(text: str, expected: str):
    assert redact(text) == expected


def test_logged_params_hide_passwords(tmp_path: Path):
    from pipeline import stages
    from pipeline.registry import connection

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}", f"data.dvc_remote={REMOTE}"], environ={})
    mlflow_client = connection.client(cfg.registry)
    run_id = stages.start_run(cfg, mlflow_client)  # logs every setting as a param
    params = mlflow_client.get_run(run_id).data.params
    assert params["data.dvc_remote"] == "https://bob:***@dvc.example.com/store"
    assert not any("hunter2" in value for value in params.values())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("verbose", [False, True])
def test_logs_hide_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: bool):
    log_file = console.new_run_log(tmp_path / "logs")
    console.setup(verbose=verbose, log_file=log_file)
    logging.getLogger("pipeline.registry.versioning").warning("push to %s failed", REMOTE)
    console.stage("ingest", f"from {REMOTE}")
    err = capsys.readouterr().err
    assert "bob:***@dvc.example.com" in err and "bob:***@dvc.example.com" in log_file.read_text()
    assert "hunter2" not in err and "hunter2" not in log_file.read_text()


def test_model_card_hides_passwords():
    metrics = {"accuracy": 0.9, "macro_f1": 0.9, "weighted_f1": 0.9, "macro_precision": 0.9, "macro_recall": 0.9}
    card = model_card.build(["joy"], {"data_source": REMOTE}, metrics, GateVerdict(True, [], []), {}, None)
    assert "bob:***@dvc.example.com" in card and "hunter2" not in card


def test_restore_gives_back_the_configured_uri_only_for_its_own_redacted_form():
    from pipeline.redact import restore

    assert restore("https://bob:***@dvc.example.com/store", REMOTE) == REMOTE  # read the source again
    assert restore("https://eve:***@dvc.example.com/store", REMOTE) == "https://eve:***@dvc.example.com/store"
    assert restore("data/emotions.csv", "data/emotions.csv") == "data/emotions.csv"


def test_the_served_models_parity_report_hides_passwords():
    from types import SimpleNamespace

    from pipeline.serving.backends import ParityReport
    from pipeline.serving.store import LoadedModel

    reason = f"int8 accuracy 0.9 vs torch-fp32 0.9 on 10 test texts of {REMOTE!r}"
    parity = ParityReport("int8", True, reason, 0.9, 0.9, 1.0, 0.01, 10, REMOTE)
    loaded = LoadedModel(
        "m",
        "1",
        SimpleNamespace(labels=["joy"], backend="int8", quantization="dynamic"),
        "int8",
        parity,
        {},
        None,
        0,
        0,
    )
    info = loaded.info()
    assert info["parity"]["source"] == "https://bob:***@dvc.example.com/store" and info["parity"]["n"] == 10
    assert "hunter2" not in repr(info)
