"""Registry integrity on real stores: only 'does not exist' reads as 'no champion' (a broken sqlite store or an
unreachable tracking server stops with a clear, redacted message and changes nothing), one version per run, and a
version whose registration failed is replaced, not kept beside a new one."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline.config import Config, load_config
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import PARAMS, free_port
from tests.integration.test_registry import aliases, register_versions

pytestmark = pytest.mark.slow

MODEL = "emotion-classifier"


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(PARAMS, [f"project_dir={tmp_path}", f"mlflow.lock_file={tmp_path}/mlflow/tracking.lock"], {})


def database(cfg: Config) -> Path:
    return Path(cfg.tracking_uri.removeprefix("sqlite:///"))


@contextlib.contextmanager
def broken_alias_table(cfg: Config) -> Iterator[None]:
    """The sqlite store fails every alias read (as a damaged or half-migrated database does) until restored."""
    with sqlite3.connect(database(cfg)) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME TO hidden_aliases")
    try:
        yield
    finally:
        with sqlite3.connect(database(cfg)) as db:
            db.execute("ALTER TABLE hidden_aliases RENAME TO registered_model_aliases")


def test_only_a_missing_model_or_alias_means_none(cfg: Config, tiny_model_dir: Path) -> None:
    client = connection.client(cfg.registry)
    assert (
        model_versions.version_by_alias(cfg.registry, client, model_versions.CHAMPION) is None
    )  # no registered model yet
    assert model_versions.registered_model(cfg.registry, client) is None
    register_versions(cfg, tiny_model_dir, ["passed"])
    assert (
        model_versions.version_by_alias(cfg.registry, client, model_versions.CHAMPION) is None
    )  # the model, but no alias
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    assert str(model_versions.version_by_alias(cfg.registry, client, model_versions.CHAMPION).version) == "1"


def test_a_failing_sqlite_store_stops_promotion_and_changes_nothing(cfg: Config, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    with broken_alias_table(cfg):
        with pytest.raises(connection.RegistryUnavailable) as caught:
            model_versions.version_by_alias(cfg.registry, client, model_versions.CHAMPION)
        message = str(caught.value)
        assert "alias 'champion'" in message and cfg.tracking_uri in message and "no such table" in message
        assert "Nothing was registered or promoted" in message
        with pytest.raises(connection.RegistryUnavailable):
            champion_alias.promote(cfg.registry, client, "2", actor="b", reason="r")
        with pytest.raises(connection.RegistryUnavailable):
            champion_alias.rollback(cfg.registry, client, actor="b", reason="r")
    assert aliases(cfg) == {"champion": "1"}
    assert [e.version for e in champion_alias.history(cfg.registry, client)] == ["1"]


def test_an_unreachable_tracking_server_is_an_error_naming_the_redacted_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of after MLflow's back-off
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://alice:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    overrides = [
        f"project_dir={tmp_path}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.lock_file={tmp_path}/locks/registry.lock",
    ]
    cfg = load_config(PARAMS, overrides, {})
    with pytest.raises(connection.RegistryUnavailable) as caught:
        model_versions.version_by_alias(cfg.registry, connection.client(cfg.registry), model_versions.CHAMPION)
    message = str(caught.value)
    assert f"http://alice:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in message and "alias 'champion'" in message
    assert "hunter2" not in message

    common = ["--config", str(PARAMS), *(arg for o in overrides for arg in ("--set", o))]
    assert cli.main(["promote", "1", "--reason", "r", *common]) == 2  # a clear error, not a traceback
    err = capsys.readouterr().err
    assert "the MLflow registry at http://alice:***@" in err and "read version 1" in err and "hunter2" not in err


def test_registering_a_run_twice_gives_its_one_version(cfg: Config, tiny_model_dir: Path) -> None:
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    logged = run_log.log_model(run_id, tiny_model_dir, ["joy", "fear"])
    first = model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed", "try": "1"}, "card 1")
    again = model_versions.register(
        cfg.registry, client, logged, run_id, {"gate": "passed", "try": "2"}, "card 2"
    )  # a retry
    assert first == again == "1"
    (version,) = client.search_model_versions(f"name='{MODEL}'")
    assert version.tags["try"] == "2" and version.description == "card 2"  # brought up to date, not duplicated
    assert model_versions.version_of_run(cfg.registry, client, run_id) == "1"


def test_a_version_whose_registration_failed_is_replaced(cfg: Config, tiny_model_dir: Path) -> None:
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    logged = run_log.log_model(run_id, tiny_model_dir, ["joy", "fear"])
    model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed"}, "card")
    with sqlite3.connect(database(cfg)) as db:  # what a store leaves when copying the model failed
        db.execute("UPDATE model_versions SET status = 'FAILED_REGISTRATION'")
    assert model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed"}, "card") == "2"
    assert [(str(v.version), v.status) for v in client.search_model_versions(f"name='{MODEL}'")] == [("2", "READY")]


def test_promotion_reasons_and_version_tags_hide_passwords(cfg: Config, tiny_model_dir: Path) -> None:
    client = connection.client(cfg.registry)
    run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    run_log.set_tags(client, run_id, {"data_source": "https://bob:hunter2@data.example.com/x.csv"})
    assert client.get_run(run_id).data.tags["data_source"] == "https://bob:***@data.example.com/x.csv"
    logged = run_log.log_model(run_id, tiny_model_dir, ["joy", "fear"])
    source = {"data_source": "s3://key:hunter2@bucket/x", "gate": "passed"}
    version = model_versions.register(cfg.registry, client, logged, run_id, source, "from s3://key:hunter2@bucket/x")
    champion_alias.promote(cfg.registry, client, version, actor="a", reason="retrained on ssh://u:hunter2@host/data")
    stored = client.get_model_version(MODEL, version)
    assert stored.tags["data_source"] == "s3://key:***@bucket/x" and "hunter2" not in stored.description
    assert "hunter2" not in stored.tags["promotion_reason"]
    assert champion_alias.history(cfg.registry, client)[-1].reason == "retrained on ssh://u:***@host/data"


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_lease_left_by_a_killed_promoter_on_this_host_is_taken_at_once(cfg: Config, tiny_model_dir: Path) -> None:
    import socket
    import time

    register_versions(cfg, tiny_model_dir, ["passed"])
    client = connection.client(cfg.registry)
    lease = MODEL + champion_alias.LEASE_SUFFIX
    far = f"{time.time() + 3600:.3f}"  # not expired: only the dead holder frees it
    client.create_registered_model(
        lease, tags={"token": "dead", "expires": far, "host": socket.gethostname(), "pid": str(dead_pid())}
    )
    with champion_alias._registry_lease(cfg.registry, client, "mine"):
        assert client.get_registered_model(lease).tags["token"] == "mine"


def test_a_lease_of_a_live_holder_is_not_taken(cfg: Config, tiny_model_dir: Path) -> None:
    import os
    import socket
    import time

    register_versions(cfg, tiny_model_dir, ["passed"])
    client = connection.client(cfg.registry)
    lease = MODEL + champion_alias.LEASE_SUFFIX
    far = f"{time.time() + 3600:.3f}"
    client.create_registered_model(
        lease, tags={"token": "live", "expires": far, "host": socket.gethostname(), "pid": str(os.getppid())}
    )
    assert not champion_alias._try_lease(cfg.registry, client, lease, "mine")
    assert client.get_registered_model(lease).tags["token"] == "live"


def test_a_champion_move_nobody_recorded_is_recorded_by_the_next_promotion(cfg: Config, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="first")
    model_versions.set_alias(
        cfg.registry, client, model_versions.CHAMPION, "2"
    )  # as a promotion killed before its history entry leaves it
    champion_alias.promote(cfg.registry, client, "3", actor="b", reason="third")
    events = champion_alias.history(cfg.registry, client)
    assert [(e.version, e.previous, e.kind) for e in events] == [
        ("1", None, "manual"),
        ("2", "1", "recovered"),
        ("3", "2", "manual"),
    ]
