"""Promotion, rollback, history and concurrent promotions on a real sqlite MLflow registry."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import PARAMS, REPO

MODEL = "emotion-classifier"


@pytest.fixture
def cfg(tmp_path: Path):
    return load_config(PARAMS, [f"project_dir={tmp_path}", f"mlflow.lock_file={tmp_path}/mlflow/tracking.lock"], {})


def register_versions(cfg, model_dir: Path, gates: list[str]) -> list[str]:
    """Real logged and registered versions, each from its own run (no training needed to exercise the registry)."""
    client = connection.client(cfg.registry)
    versions = []
    for i, gate in enumerate(gates):
        run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
        logged = run_log.log_model(run_id, model_dir, ["joy", "fear"])
        versions.append(
            model_versions.register(cfg.registry, client, logged, run_id, {"gate": gate, "data_hash": f"h{i}"}, "card")
        )
    return versions


def aliases(cfg) -> dict[str, str]:
    return {k: str(v) for k, v in connection.client(cfg.registry).get_registered_model(MODEL).aliases.items()}


def test_promote_moves_champion_keeps_previous_and_records_who_why_when(cfg, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="alice", reason="first release")
    event = champion_alias.promote(cfg.registry, client, "2", actor="bob", reason="better on fear")

    assert aliases(cfg) == {"champion": "2", "previous": "1"}
    assert event.previous == "1" and event.kind == "manual"
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["promoted_by"] == "bob" and tags["promotion_reason"] == "better on fear" and tags["promoted_at"]
    assert [(e.version, e.previous, e.actor) for e in champion_alias.history(cfg.registry, client)] == [
        ("1", None, "alice"),
        ("2", "1", "bob"),
    ]


def test_failed_gate_version_needs_force_and_unknown_version_is_refused(cfg, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "failed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    with pytest.raises(PipelineError, match="failed its gate"):
        champion_alias.promote(cfg.registry, client, "2", actor="a", reason="r")
    with pytest.raises(PipelineError, match="no version 9"):
        champion_alias.promote(cfg.registry, client, "9", actor="a", reason="r")
    assert aliases(cfg) == {"champion": "1"}
    champion_alias.promote(cfg.registry, client, "2", actor="a", reason="hotfix", force=True)
    assert aliases(cfg) == {"champion": "2", "previous": "1"}


def test_rollback_swaps_champion_and_previous(cfg, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    with pytest.raises(PipelineError, match="no previous champion"):
        champion_alias.rollback(cfg.registry, client, actor="a", reason="r")
    champion_alias.promote(cfg.registry, client, "2", actor="a", reason="r")
    event = champion_alias.rollback(cfg.registry, client, actor="oncall", reason="v2 misreads sarcasm")
    assert aliases(cfg) == {"champion": "1", "previous": "2"}
    assert event.kind == "rollback" and champion_alias.history(cfg.registry, client)[-1].reason == "v2 misreads sarcasm"


def test_stale_champion_is_refused_and_changes_nothing(cfg, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    champion_alias.promote(cfg.registry, client, "2", actor="b", reason="r")  # another run won the race
    with pytest.raises(champion_alias.StaleChampion):
        champion_alias.promote(cfg.registry, client, "3", actor="c", reason="r", kind="gate", expected_champion="1")
    assert aliases(cfg) == {"champion": "2", "previous": "1"} and len(champion_alias.history(cfg.registry, client)) == 2


def test_registry_lease_is_waited_for_and_an_expired_one_is_taken_over(cfg, tiny_model_dir: Path, monkeypatch) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed"])
    client = connection.client(cfg.registry)
    lease = MODEL + champion_alias.LEASE_SUFFIX
    client.create_registered_model(lease, tags={"token": "other-machine", "expires": str(time.time() + 600)})
    monkeypatch.setattr(champion_alias, "LEASE_SECONDS", 1.0)  # how long a promoter waits for a held lease
    with pytest.raises(PipelineError, match="promotion-lease"):
        champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    assert aliases(cfg) == {} and champion_alias.history(cfg.registry, client) == []

    client.set_registered_model_tag(lease, "expires", str(time.time() - 1))  # its promoter crashed long ago
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")
    assert aliases(cfg) == {"champion": "1"}
    assert client.search_registered_models(f"name='{lease}'") == []  # released
    assert client.get_registered_model(MODEL).tags[champion_alias.GENERATION_TAG].startswith("1:")


def test_a_promotion_overtaken_mid_move_is_undone_and_raises_stale(cfg, tiny_model_dir: Path) -> None:
    """A promoter whose lease expired while it stalled: the registry-side generation check catches the overlap."""
    register_versions(cfg, tiny_model_dir, ["passed", "passed", "passed"])
    client = connection.client(cfg.registry)
    champion_alias.promote(cfg.registry, client, "1", actor="a", reason="r")

    class Overtaken:
        """The real client; another machine completes its own promotion of v3 just before this one sets champion."""

        def __getattr__(self, attr: str):
            return getattr(client, attr)

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            if alias == "champion" and version == "2":
                champion_alias._move_champion(cfg.registry, client, "3", "gate", "other-machine", "won the race")
            client.set_registered_model_alias(name, alias, version)

    with pytest.raises(champion_alias.StaleChampion, match="another promotion"):
        champion_alias.promote(cfg.registry, Overtaken(), "2", actor="stalled", reason="r")
    events = champion_alias.history(cfg.registry, client)
    assert [(e.version, e.previous, e.actor) for e in events] == [("1", None, "a"), ("3", "1", "other-machine")]
    assert aliases(cfg) == {"champion": "3", "previous": "1"}
    keys = [k for k in client.get_registered_model(MODEL).tags if k.startswith(champion_alias.HISTORY_PREFIX)]
    # generation 2 was the loser's claim: never reused, so the winner's entry is generation 3
    assert sorted(k.split(".")[1] for k in keys) == ["000001", "000003"]
    assert client.get_registered_model(MODEL).tags[champion_alias.GENERATION_TAG] == "3:" + max(keys).split(".")[2]


PROMOTER = """
import sys
from pipeline.registry import champion_alias, connection, model_versions, run_log
from pipeline.config import load_config
project = sys.argv[2]
cfg = load_config(sys.argv[1], [f"project_dir={project}", f"mlflow.lock_file={project}/mlflow/tracking.lock"], {})
client = connection.client(cfg.registry)
for i in range(int(sys.argv[4])):
    target = sys.argv[3] if i % 2 == 0 else "1"
    champion_alias.promote(cfg.registry, client, target, actor=f"worker-{sys.argv[3]}", reason=str(i))
"""


@pytest.mark.slow
def test_concurrent_promotions_leave_consistent_aliases_and_history(cfg, tiny_model_dir: Path) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed", "passed"])
    rounds = 8
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(PARAMS), cfg.project_dir, version, str(rounds)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("2", "3")
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]

    events = champion_alias.history(cfg.registry, connection.client(cfg.registry))
    assert len(events) == 2 * rounds  # no promotion lost
    for before, after in itertools.pairwise(events):  # each promotion saw the champion the one before it set
        assert after.previous == before.version
    final = aliases(cfg)
    assert final["champion"] == events[-1].version
    if events[-1].previous != events[-1].version:
        assert final["previous"] == events[-1].previous


def test_cli_models_promote_rollback_history(cfg, tiny_model_dir: Path, capsys, monkeypatch) -> None:
    register_versions(cfg, tiny_model_dir, ["passed", "passed"])
    monkeypatch.setenv("EMOTION_ACTOR", "carol")
    common = [
        "--config",
        str(PARAMS),
        "--set",
        f"project_dir={cfg.project_dir}",
        "--set",
        f"mlflow.lock_file={cfg.project_dir}/mlflow/tracking.lock",
    ]
    assert cli.main(["promote", "1", "--reason", "initial", *common]) == 0
    assert cli.main(["promote", "2", "--reason", "newer", *common]) == 0
    assert cli.main(["rollback", "--reason", "regression in prod", *common]) == 0
    capsys.readouterr()
    assert cli.main(["models", *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:3] == ["2", "previous", "passed"] and table[2].split()[:3] == ["1", "champion", "passed"]
    assert "h1" in table[1]
    assert cli.main(["history", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("rollback: champion -> version 1 (previous: 2) by carol")
    assert "by carol" in lines[-1] and "regression in prod" in lines[-1]
    assert cli.main(["promote", "7", "--reason", "x", *common]) == 2  # a user error, not a traceback


def test_onnx_export_is_logged_with_the_model_only_when_asked(cfg, tiny_model_dir: Path, tmp_path: Path) -> None:
    import onnx

    client = connection.client(cfg.registry)
    without = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    run_log.log_model(without, tiny_model_dir, ["joy", "fear"])
    assert run_log.download_onnx(without, tmp_path / "a") is None  # the server then exports at load

    with_onnx = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
    run_log.log_model(with_onnx, tiny_model_dir, ["joy", "fear"], export_onnx=True)
    path = run_log.download_onnx(with_onnx, tmp_path / "b")
    assert path is not None and path.name == "model.onnx"
    onnx.checker.check_model(str(path))
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logits"]
