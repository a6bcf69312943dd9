"""Moving the champion on a real sqlite MLflow registry (a copy of a migrated template, see tests/mlflow_store.py):
the reason, the refusals, compare-and-set against the champion the gate saw, the previous alias, version tags,
history and its generation keys, a lost race undone, an unrecorded move recovered, the lease, and rollback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.ops import faults
from pipeline.ops.lock import held
from pipeline.registry import champion_alias, connection, model_versions
from pipeline.registry.champion_alias import GENERATION_TAG, HISTORY_PREFIX, StaleChampion
from pipeline.registry.connection import RegistryUnavailable
from tests.mlflow_store import register_versions, registry_on_copy, scratch_folder

MODEL = "emotion-classifier"
LEASE = MODEL + champion_alias.LEASE_SUFFIX


@pytest.fixture
def folder() -> Iterator[Path]:
    with scratch_folder() as path:
        yield path


@pytest.fixture
def registry(folder: Path) -> RegistrySettings:
    return registry_on_copy(folder)


def aliases(client: Any) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


def model_tags(client: Any) -> dict[str, str]:
    return dict(client.get_registered_model(MODEL).tags)


def history_keys(client: Any) -> list[str]:
    return sorted(k for k in model_tags(client) if k.startswith(HISTORY_PREFIX))


def moves(registry: RegistrySettings, client: Any) -> list[tuple[str, str | None, str]]:
    return [(e.version, e.previous, e.kind) for e in champion_alias.history(registry, client)]


def promote(registry: RegistrySettings, client: Any, version: str, **kwargs: Any) -> champion_alias.Promotion:
    return champion_alias.promote(registry, client, version, **({"actor": "ann", "reason": "better"} | kwargs))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.registry.champion_alias"]


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


class RacingClient:
    """The real client, except that the first ``set_model_version_tag`` (the move has set the aliases and not yet
    checked its claim) first lets ``competitor`` write to the registry: another promoter whose lease expired."""

    def __init__(self, client: Any, competitor: Any) -> None:
        self._client, self._competitor = client, competitor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set_model_version_tag(self, *args: Any) -> None:
        competitor, self._competitor = self._competitor, None
        if competitor is not None:
            competitor(self._client)
        self._client.set_model_version_tag(*args)


# the reason


def test_a_reason_is_required_stripped_and_recorded_without_passwords() -> None:
    for blank in ("", "   \n"):
        with pytest.raises(
            PipelineError, match=r"^--reason is empty: say why the champion moves \(it is recorded with"
        ):
            champion_alias.required_reason(blank)
    assert champion_alias.required_reason("  it is better \n") == "it is better"
    assert champion_alias.required_reason(" see https://u:pw@host/x ") == "see https://u:***@host/x"


def test_promote_and_rollback_refuse_an_empty_reason_before_anything_moves(registry: RegistrySettings) -> None:
    client = register_versions(registry, 2)
    promote(registry, client, "1")
    with pytest.raises(PipelineError, match="--reason is empty"):
        promote(registry, client, "2", reason=" ")
    with pytest.raises(PipelineError, match="--reason is empty"):
        champion_alias.rollback(registry, client, actor="ann", reason="")
    assert aliases(client) == {"champion": "1"}


# refusals: an unknown version, a failed gate, missing shadow evidence, a champion that moved


@pytest.mark.parametrize("version", ["3", "0003"])
def test_an_unknown_version_is_named_and_nothing_moves(registry: RegistrySettings, version: str) -> None:
    client = register_versions(registry, 2)
    with pytest.raises(PipelineError, match=f"^{MODEL} has no version 3: see `emotion models`$"):
        promote(registry, client, version)
    assert aliases(client) == {} and champion_alias.history(registry, client) == []


def test_promoting_before_any_model_is_registered_names_the_version(registry: RegistrySettings) -> None:
    with pytest.raises(PipelineError, match=f"{MODEL} has no version 1"):
        promote(registry, connection.client(registry), "1")


def test_a_version_that_failed_its_gate_is_refused_unless_forced(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1, gate="failed")
    with pytest.raises(PipelineError, match=f"^{MODEL} version 1 failed its gate; use --force to promote it anyway$"):
        promote(registry, client, "1")
    assert aliases(client) == {}
    assert promote(registry, client, "1", force=True).version == "1"
    assert aliases(client) == {"champion": "1"}


def test_a_version_that_passed_its_gate_needs_no_force(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1, gate="passed")
    assert promote(registry, client, "1").version == "1"


def test_a_manual_promotion_needs_the_shadow_evidence_asked_for(folder: Path) -> None:
    registry = registry_on_copy(folder, "gate.min_shadow_samples=10", "gate.min_shadow_agreement=0.8")
    client = register_versions(registry, 2)
    with pytest.raises(PipelineError, match="shadow-scored on 0 texts"):
        promote(registry, client, "1")
    assert aliases(client) == {}
    assert promote(registry, client, "1", kind="gate").reason == "better"  # the gate's own promotion: no shadow rule
    for key, value in {"shadow.samples": "20", "shadow.agreement": "0.9", "shadow.champion": "1"}.items():
        client.set_model_version_tag(MODEL, "2", key, value)
    assert promote(registry, client, "2").reason == "better"  # enough evidence: the reason as given


def test_forcing_past_missing_shadow_evidence_records_what_was_overridden(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_on_copy(folder, "gate.min_shadow_samples=10")
    client = register_versions(registry, 1)
    with caplog.at_level(logging.WARNING, logger="pipeline.registry.champion_alias"):
        event = promote(registry, client, "1", force=True)
    assert event.reason.startswith("better [forced: ") and "shadow-scored on 0 texts" in event.reason
    problem = event.reason.removeprefix("better [forced: ").removesuffix("]")
    assert messages(caplog) == [f"promoting anyway (--force): {problem}"]
    assert client.get_model_version(MODEL, "1").tags["promotion_reason"] == event.reason


@pytest.mark.parametrize("expected", ["1", None])
def test_a_champion_other_than_the_one_compared_with_is_stale_and_nothing_changes(
    registry: RegistrySettings, expected: str | None
) -> None:
    client = register_versions(registry, 3)
    promote(registry, client, "1")
    promote(registry, client, "2")
    before = model_tags(client), aliases(client)
    with pytest.raises(StaleChampion, match=f"^the champion moved from {expected} to 2 during this run$"):
        promote(registry, client, "3", expected_champion=expected)
    assert (model_tags(client), aliases(client)) == before
    assert "promoted_at" not in client.get_model_version(MODEL, "3").tags
    assert not client.search_registered_models(f"name='{LEASE}'")  # the lease was given back


def test_the_champion_compared_with_may_be_none_or_the_current_one(registry: RegistrySettings) -> None:
    client = register_versions(registry, 2)
    assert promote(registry, client, "1", expected_champion=None).previous is None
    assert promote(registry, client, "2", expected_champion="1").previous == "1"
    assert aliases(client)["champion"] == "2"


# a move: aliases, version tags, history, generation


def test_the_first_promotion_sets_champion_tags_and_one_history_entry(
    registry: RegistrySettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = register_versions(registry, 1)
    with caplog.at_level(logging.INFO, logger="pipeline.registry.champion_alias"):
        event = promote(registry, client, "0001", actor="ann", reason="first one", kind="gate")
    assert messages(caplog)[-1] == f"promoted {MODEL} version 1 to champion (previous: None) by ann: first one"
    assert (event.version, event.previous, event.kind, event.reason) == ("1", None, "gate", "first one")
    assert aliases(client) == {"champion": "1"}  # no previous: there was no champion
    tags = client.get_model_version(MODEL, "1").tags
    assert {k: tags[k] for k in ("promoted_at", "promoted_by", "promotion_reason", "promotion_kind")} == {
        "promoted_at": event.at,
        "promoted_by": "ann",
        "promotion_reason": "first one",
        "promotion_kind": "gate",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", event.at)  # seconds, UTC
    generation = model_tags(client)[GENERATION_TAG]
    number, token = generation.split(":")
    assert number == "1" and len(token) == 12
    assert history_keys(client) == [f"{HISTORY_PREFIX}000001.{token}"]
    assert json.loads(model_tags(client)[history_keys(client)[0]]) == {
        "version": "1",
        "previous": None,
        "kind": "gate",
        "actor": "ann",
        "reason": "first one",
        "at": event.at,
    }
    assert not client.search_registered_models(f"name='{LEASE}'")  # the lease was given back


def test_a_long_reason_is_cut_in_the_version_tag_and_kept_whole_in_history(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    reason = "r" * 4000 + "tail"
    promote(registry, client, "1", reason=reason)
    assert client.get_model_version(MODEL, "1").tags["promotion_reason"] == "r" * 4000
    assert champion_alias.history(registry, client)[0].reason == reason


def test_each_move_keeps_the_old_champion_as_previous_and_history_in_order(
    registry: RegistrySettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = register_versions(registry, 3)
    with caplog.at_level(logging.INFO, logger="pipeline.registry.champion_alias"):
        for version in ("1", "2", "3"):
            promote(registry, client, version)
    assert messages(caplog)[-1] == f"promoted {MODEL} version 3 to champion (previous: 2) by ann: better"
    assert aliases(client) == {"champion": "3", "previous": "2"}
    assert moves(registry, client) == [("1", None, "manual"), ("2", "1", "manual"), ("3", "2", "manual")]
    numbers = [key.removeprefix(HISTORY_PREFIX).split(".")[0] for key in history_keys(client)]
    assert numbers == ["000001", "000002", "000003"]
    assert model_tags(client)[GENERATION_TAG].startswith("3:")


def test_promoting_the_champion_again_keeps_previous_on_the_one_before(registry: RegistrySettings) -> None:
    client = register_versions(registry, 2)
    promote(registry, client, "1")
    promote(registry, client, "2")
    event = promote(registry, client, "2", reason="again")
    assert event.previous == "2"
    assert aliases(client) == {"champion": "2", "previous": "1"}
    assert moves(registry, client)[-1] == ("2", "2", "manual")


def test_history_is_ordered_by_generation_past_nine_and_keys_are_never_reused(registry: RegistrySettings) -> None:
    client = register_versions(registry, 3)
    promote(registry, client, "1")
    client.set_registered_model_tag(MODEL, GENERATION_TAG, "9:earlier")  # as if eight more moves had happened
    promote(registry, client, "2")
    promote(registry, client, "3")
    numbers = [key.removeprefix(HISTORY_PREFIX).split(".")[0] for key in history_keys(client)]
    assert numbers == ["000001", "000010", "000011"]
    assert [e.version for e in champion_alias.history(registry, client)] == ["1", "2", "3"]


def test_a_store_without_the_generation_tag_counts_its_history_entries(registry: RegistrySettings) -> None:
    client = register_versions(registry, 3)
    promote(registry, client, "1")
    promote(registry, client, "2")
    client.delete_registered_model_tag(MODEL, GENERATION_TAG)  # a store from before the tag
    promote(registry, client, "3")
    assert model_tags(client)[GENERATION_TAG].startswith("3:")
    assert history_keys(client)[-1].startswith(f"{HISTORY_PREFIX}000003.")
    assert moves(registry, client)[-1] == ("3", "2", "manual")


def test_history_of_a_model_not_registered_yet_says_so(registry: RegistrySettings) -> None:
    with pytest.raises(PipelineError, match=f"^no registered model '{MODEL}' yet: run `emotion run`$"):
        champion_alias.history(registry, connection.client(registry))
    assert champion_alias.history(registry, register_versions(registry, 1)) == []


# a lost race: another promoter moved the champion between this move's claim and its check


def winner(version: str, previous: str) -> Any:
    """A competing promoter that claims generation 7, records its move and sets both aliases."""

    def write(client: Any) -> None:
        event = {"version": version, "previous": previous, "kind": "gate", "actor": "other", "reason": "r", "at": "t"}
        client.set_registered_model_tag(MODEL, GENERATION_TAG, "7:winner")
        client.set_registered_model_tag(MODEL, f"{HISTORY_PREFIX}000007.winner", json.dumps(event))
        client.set_registered_model_alias(MODEL, "previous", previous)
        client.set_registered_model_alias(MODEL, "champion", version)

    return write


def test_a_move_whose_generation_claim_was_overtaken_is_undone_and_raises(registry: RegistrySettings) -> None:
    client = register_versions(registry, 5)
    promote(registry, client, "1")
    promote(registry, client, "2")
    racing = RacingClient(client, winner("4", "3"))
    message = (
        r"^another promotion moved the champion while this one did \(generation 3:\w{12} -> 7:winner, champion 4\)"
    )
    with pytest.raises(
        StaleChampion, match=message + ": this promotion of version 5 is not recorded; see `emotion history`$"
    ):
        promote(registry, racing, "5")
    assert moves(registry, client) == [("1", None, "manual"), ("2", "1", "manual"), ("4", "3", "gate")]
    assert aliases(client) == {"champion": "4", "previous": "3"}  # as the winner left them


def test_a_champion_moved_under_an_unchanged_generation_is_undone_too(registry: RegistrySettings) -> None:
    client = register_versions(registry, 3)
    promote(registry, client, "1")
    promote(registry, client, "2")

    def move_champion_only(c: Any) -> None:
        c.set_registered_model_alias(MODEL, "champion", "1")

    with pytest.raises(StaleChampion, match=r"champion 1\): this promotion of version 3 is not recorded"):
        promote(registry, RacingClient(client, move_champion_only), "3")
    assert moves(registry, client) == [("1", None, "manual"), ("2", "1", "manual")]
    assert aliases(client) == {"champion": "2", "previous": "1"}  # as the last recorded promotion left them


def test_restoring_after_a_lost_race_sets_no_previous_the_winner_did_not_have(registry: RegistrySettings) -> None:
    client = register_versions(registry, 3)

    def first_promotion_elsewhere(c: Any) -> None:
        winner("2", "2")(c)  # a history entry whose previous is the version itself
        c.delete_registered_model_alias(MODEL, "previous")

    with pytest.raises(StaleChampion):
        promote(registry, RacingClient(client, first_promotion_elsewhere), "3")
    assert aliases(client) == {"champion": "2"}


def test_a_lost_race_with_no_history_left_leaves_the_aliases_alone(registry: RegistrySettings) -> None:
    client = register_versions(registry, 2)

    def generation_only(c: Any) -> None:
        c.set_registered_model_tag(MODEL, GENERATION_TAG, "5:other")

    with pytest.raises(StaleChampion):
        promote(registry, RacingClient(client, generation_only), "2")
    assert champion_alias.history(registry, client) == []
    assert aliases(client) == {"champion": "2"}  # nothing recorded to restore from


def test_the_fault_point_stands_between_the_alias_move_and_the_version_tags(
    registry: RegistrySettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = register_versions(registry, 2)
    marker = tmp_path / "marker"
    monkeypatch.setattr(faults, "HOLD_SECONDS", 0.0)  # pass the point at once instead of waiting for a kill
    monkeypatch.setenv(faults.MARKER_VARIABLE, str(marker))
    promote(registry, client, "1")
    assert not marker.exists()  # no point named: no stop
    monkeypatch.setenv(faults.POINT_VARIABLE, "promote.champion_moved")
    promote(registry, client, "2")
    assert marker.read_text() == f"promote.champion_moved {os.getpid()}\n"


# a move nobody recorded (a promoter killed between the alias and the history entry)


def test_an_unrecorded_champion_move_is_recorded_as_recovered_by_the_next_move(
    registry: RegistrySettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = register_versions(registry, 3)
    promote(registry, client, "1")
    model_versions.set_alias(registry, client, "champion", "2")  # as a promoter killed after the alias leaves it
    client.set_model_version_tag(MODEL, "2", "promoted_by", "bob")
    with caplog.at_level(logging.WARNING, logger="pipeline.registry.champion_alias"):
        promote(registry, client, "3")
    events = champion_alias.history(registry, client)
    assert [(e.version, e.previous, e.kind, e.actor) for e in events] == [
        ("1", None, "manual", "ann"),
        ("2", "1", "recovered", "bob"),
        ("3", "2", "manual", "ann"),
    ]
    assert events[1].reason.startswith("champion found on version 2 while history ended at 1: a promotion was")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", events[1].at)
    assert any(key.endswith("000001.recovered") for key in history_keys(client))
    assert messages(caplog) == [f"history: {events[1].reason}"]
    assert events[1].reason.endswith("after moving the alias; recorded by the next promotion")


def test_a_recovered_move_without_its_promoter_tag_names_an_unknown_actor(registry: RegistrySettings) -> None:
    client = register_versions(registry, 2)
    model_versions.set_alias(registry, client, "champion", "1")  # set by hand before any promotion
    promote(registry, client, "2")
    events = champion_alias.history(registry, client)
    assert [(e.version, e.previous, e.kind, e.actor) for e in events] == [
        ("1", None, "recovered", "unknown"),
        ("2", "1", "manual", "ann"),
    ]
    assert f"{HISTORY_PREFIX}000000.recovered" in history_keys(client)


# the lease across machines


def test_the_lease_is_taken_once_with_who_holds_it_and_until_when(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    before = time.time()
    assert champion_alias._try_lease(registry, client, LEASE, "first")
    tags = client.get_registered_model(LEASE).tags
    assert (tags["token"], tags["host"], tags["pid"]) == ("first", socket.gethostname(), str(os.getpid()))
    expires = float(tags["expires"]) - champion_alias.LEASE_SECONDS  # written to the millisecond
    assert before - 0.001 <= expires <= time.time() + 0.001
    assert not champion_alias._try_lease(registry, client, LEASE, "second")
    assert client.get_registered_model(LEASE).tags["token"] == "first"


def lease_of(client: Any, **tags: str) -> None:
    client.create_registered_model(LEASE, tags=tags)


FAR = f"{time.time() + 3600:.3f}"


@pytest.mark.parametrize(
    "tags",
    [
        {"token": "old", "expires": f"{time.time() - 1:.3f}", "host": socket.gethostname(), "pid": str(os.getpid())},
        {"token": "old", "expires": "0"},  # expired, from a pipeline that did not say who held it
        {"token": "old"},  # no expiry at all: abandoned
        {"token": "dead", "expires": FAR, "host": socket.gethostname(), "pid": "DEAD"},
    ],
    ids=["expired", "expired-no-holder", "no-expiry", "holder-exited"],
)
def test_an_abandoned_lease_is_cleared_and_then_taken(
    registry: RegistrySettings, tags: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client = register_versions(registry, 1)
    lease_of(client, **({k: (str(dead_pid()) if v == "DEAD" else v) for k, v in tags.items()}))
    with caplog.at_level(logging.WARNING, logger="pipeline.registry.champion_alias"):
        assert not champion_alias._try_lease(registry, client, LEASE, "mine")  # cleared, not yet taken
    assert not client.search_registered_models(f"name='{LEASE}'")
    [message] = messages(caplog)
    assert message.startswith(f"removing the abandoned promotion lease {LEASE} ({{'") and message.endswith("'})")
    assert champion_alias._try_lease(registry, client, LEASE, "mine")


@pytest.mark.parametrize(
    "tags",
    [
        {"token": "live", "expires": FAR, "host": socket.gethostname(), "pid": str(os.getpid())},
        {"token": "live", "expires": FAR, "host": "another-host", "pid": "DEAD"},  # not ours to judge
        {"token": "live", "expires": FAR, "pid": "DEAD"},  # no host: wait for it to expire
        {"token": "live", "expires": FAR, "host": socket.gethostname(), "pid": "none"},
        {"token": "live", "expires": FAR, "host": socket.gethostname()},
    ],
    ids=["live-holder", "other-host", "no-host", "pid-not-a-number", "no-pid"],
)
def test_a_lease_not_known_to_be_abandoned_is_kept(registry: RegistrySettings, tags: dict[str, str]) -> None:
    client = register_versions(registry, 1)
    lease_of(client, **({k: (str(dead_pid()) if v == "DEAD" else v) for k, v in tags.items()}))
    assert not champion_alias._try_lease(registry, client, LEASE, "mine")
    assert client.get_registered_model(LEASE).tags["token"] == "live"


def test_a_lease_released_while_we_looked_is_not_an_error(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)

    class ReleasedMeanwhile(RacingClient):
        def create_registered_model(self, name: str, **kwargs: Any) -> Any:
            self._client.create_registered_model(name, tags={"token": "theirs"})  # a holder had it ...
            try:
                return self._client.create_registered_model(name, **kwargs)
            finally:
                self._client.delete_registered_model(name)  # ... and gave it back before our look

    assert not champion_alias._try_lease(registry, ReleasedMeanwhile(client, None), LEASE, "mine")


def test_the_lease_is_held_for_the_block_and_given_back_even_on_error(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    with pytest.raises(RuntimeError), champion_alias._registry_lease(registry, client, "mine"):
        assert client.get_registered_model(LEASE).tags["token"] == "mine"
        raise RuntimeError("the move failed")
    assert not client.search_registered_models(f"name='{LEASE}'")


def test_a_lease_taken_over_meanwhile_is_left_to_its_new_holder(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    with champion_alias._registry_lease(registry, client, "mine"):
        client.delete_registered_model(LEASE)  # ours expired and another promoter took it
        lease_of(client, token="theirs", expires=FAR)
    assert client.get_registered_model(LEASE).tags["token"] == "theirs"


def test_waiting_for_a_held_lease_gives_up_naming_it_and_moves_nothing(
    registry: RegistrySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = register_versions(registry, 1)
    lease_of(client, token="live", expires=FAR, host=socket.gethostname(), pid=str(os.getpid()))
    monkeypatch.setattr(champion_alias, "LEASE_SECONDS", 0.2)
    message = f"^another promotion has held the registered model '{LEASE}' for over 0s; if none is running, delete"
    with pytest.raises(PipelineError, match=message + " that registered model and promote again$"):
        promote(registry, client, "1")
    assert aliases(client) == {} and client.get_registered_model(LEASE).tags["token"] == "live"


def test_a_promoter_waits_for_the_lease_to_be_given_back(
    registry: RegistrySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = register_versions(registry, 1)
    lease_of(client, token="live", expires=FAR, host=socket.gethostname(), pid=str(os.getpid()))
    tries = []

    class ReleasedAfterTwoTries(RacingClient):
        def create_registered_model(self, name: str, **kwargs: Any) -> Any:
            tries.append(name)
            if len(tries) == 3:
                self._client.delete_registered_model(LEASE)  # the holder finished
            return self._client.create_registered_model(name, **kwargs)

    promote(registry, ReleasedAfterTwoTries(client, None), "1")
    assert len(tries) == 3 and aliases(client) == {"champion": "1"}


def hide_table(registry: RegistrySettings, table: str = "registered_model_tags") -> None:
    """Break the store as a damaged or half-migrated database is: every read or write of ``table`` fails."""
    database = registry.tracking_uri.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute(f"ALTER TABLE {table} RENAME TO hidden_{table}")


def test_a_store_failing_to_read_the_version_is_not_taken_for_a_missing_version(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    hide_table(registry, "model_versions")
    message = f"^the MLflow registry at {registry.tracking_uri} failed to read version 1 of {MODEL}: MlflowException: "
    with pytest.raises(RegistryUnavailable, match=message):
        promote(registry, client, "1")


def test_a_failing_store_while_taking_the_lease_stops_with_a_clear_error(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    hide_table(registry)
    with pytest.raises(RegistryUnavailable, match=f"failed to take the promotion lease '{LEASE}': MlflowException"):
        champion_alias._try_lease(registry, client, LEASE, "mine")


def test_a_store_failing_while_reading_a_held_lease_stops_with_a_clear_error(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    lease_of(client, token="live", expires=FAR)

    class BrokenAfterCreate(RacingClient):
        def get_registered_model(self, name: str) -> Any:
            hide_table(registry)
            return self._client.get_registered_model(name)

    with pytest.raises(RegistryUnavailable, match=f"failed to take the promotion lease '{LEASE}': MlflowException"):
        champion_alias._try_lease(registry, BrokenAfterCreate(client, None), LEASE, "mine")


def test_a_promotion_queues_on_the_local_lock_and_names_its_holder(folder: Path) -> None:
    registry = registry_on_copy(folder, "lock_timeout=0")
    client = register_versions(registry, 1)
    with held(registry.lock_file, "a test holding the lock", 0):
        message = rf"^promotion: gave up after 0s waiting for {re.escape(str(registry.lock_file))}, held by pid"
        with pytest.raises(PipelineError, match=f"{message} {os.getpid()} .*a test holding the lock"):
            promote(registry, client, "1")
    assert aliases(client) == {}
    promote(registry, client, "1")
    assert aliases(client) == {"champion": "1"}


# rollback


def test_rollback_without_a_previous_champion_is_a_clear_error(registry: RegistrySettings) -> None:
    client = register_versions(registry, 1)
    promote(registry, client, "1")
    with pytest.raises(
        PipelineError, match=r"^no previous champion to roll back to \(no version has the alias 'previous'\)$"
    ):
        champion_alias.rollback(registry, client, actor="ann", reason="bad")
    assert aliases(client) == {"champion": "1"} and len(champion_alias.history(registry, client)) == 1


def test_rollback_swaps_champion_and_previous_and_is_recorded(
    registry: RegistrySettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = register_versions(registry, 2)
    promote(registry, client, "1")
    promote(registry, client, "2")
    with caplog.at_level(logging.INFO, logger="pipeline.registry.champion_alias"):
        event = champion_alias.rollback(registry, client, actor="bob", reason=" worse on fear ")
    assert messages(caplog)[-1] == f"rolled back {MODEL} to version 1 (was 2)"
    assert (event.version, event.previous, event.kind, event.actor) == ("1", "2", "rollback", "bob")
    assert event.reason == "worse on fear"
    assert aliases(client) == {"champion": "1", "previous": "2"}
    assert client.get_model_version(MODEL, "1").tags["promotion_kind"] == "rollback"
    assert moves(registry, client)[-1] == ("1", "2", "rollback")
    assert not client.search_registered_models(f"name='{LEASE}'")
