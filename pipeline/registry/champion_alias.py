"""Moving the champion alias: the one writer (``promote``), ``rollback``, the registry lease that lets one promoter
at a time move aliases across machines, and the promotion history kept as registered-model tags."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.ops.faults import fault_point
from pipeline.redact import redact
from pipeline.registry import connection, model_spec, model_versions

log = logging.getLogger(__name__)

HISTORY_PREFIX = "promotion."  # registered-model tags promotion.<generation>.<token> hold the promotion history

GENERATION_TAG = "champion_generation"  # "<n>:<token>": the n-th champion move and the promoter that made it

LEASE_SUFFIX = ".promotion-lease"  # a helper registered model that exists while one promoter moves aliases

LEASE_SECONDS = 120.0  # a lease older than this is taken as abandoned (a crashed promoter); also the wait limit


class StaleChampion(PipelineError):
    """The champion changed between scoring it and promoting: the gate's comparison is out of date."""


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    kind: str  # gate | manual | rollback | recovered
    actor: str
    reason: str
    at: str


def _lock(registry: RegistrySettings) -> contextlib.AbstractContextManager[object]:
    """Local fast path: processes on this machine queue on a file lock before they ask the registry for its lease
    (the project lock's mechanism: a timeout names the holder; a crashed holder blocks nobody)."""
    from pipeline.ops.lock import held

    return held(registry.lock_file, "promotion", registry.lock_timeout)


def _try_lease(registry: RegistrySettings, mlflow_client: Any, lease: str, token: str) -> bool:
    """Create the lease model (the database allows one of a name, so one client wins); clear it when expired, or
    at once when its holder is a process on this host that has exited (a promoter killed mid-promotion)."""
    from mlflow.exceptions import MlflowException

    from pipeline.ops.lock import Holder

    busy = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")  # held, or released while we looked
    me = Holder.this_process("promotion")
    try:
        expires = f"{time.time() + LEASE_SECONDS:.3f}"
        tags = {"token": token, "expires": expires, "host": me.host, "pid": str(me.pid)}
        mlflow_client.create_registered_model(lease, tags=tags)
        return True
    except MlflowException as exc:
        if exc.error_code not in busy:
            raise connection.unavailable(registry, f"take the promotion lease '{lease}'", exc) from exc
    try:
        held = mlflow_client.get_registered_model(lease)
        if float(held.tags.get("expires", "0")) < time.time() or _holder_gone(held.tags):
            log.warning("removing the abandoned promotion lease %s (%s)", lease, held.tags)
            mlflow_client.delete_registered_model(lease)
    except MlflowException as exc:
        if exc.error_code not in busy:
            raise connection.unavailable(registry, f"take the promotion lease '{lease}'", exc) from exc
    return False


def _holder_gone(tags: dict[str, str]) -> bool:
    """Whether a lease's holder is known to be dead: a process of this host that no longer exists."""
    from pipeline.ops.lock import Holder

    if "host" not in tags or not tags.get("pid", "").isdigit():
        return False  # a lease from another version of the pipeline: wait for it to expire
    return Holder(int(tags["pid"]), tags["host"], "", "", "promotion", "").is_gone()


@contextlib.contextmanager
def _registry_lease(registry: RegistrySettings, mlflow_client: Any, token: str) -> Iterator[None]:
    """Across machines sharing one tracking server: one promoter at a time holds ``<model>.promotion-lease``."""
    lease = registry.model_name + LEASE_SUFFIX
    deadline = time.monotonic() + LEASE_SECONDS
    while not _try_lease(registry, mlflow_client, lease, token):
        if time.monotonic() > deadline:
            raise PipelineError(
                f"another promotion has held the registered model '{lease}' for over {LEASE_SECONDS:.0f}s; "
                "if none is running, delete that registered model and promote again"
            )
        time.sleep(random.uniform(0.05, 0.3))
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # an expired lease may have been taken over: leave that one alone
            if mlflow_client.get_registered_model(lease).tags.get("token") == token:
                mlflow_client.delete_registered_model(lease)


def _champion(registry: RegistrySettings, mlflow_client: Any) -> str | None:
    current = model_versions.version_by_alias(registry, mlflow_client, model_versions.CHAMPION)
    return str(current.version) if current else None


def history(registry: RegistrySettings, mlflow_client: Any) -> list[Promotion]:
    """Every promotion and rollback, oldest first."""
    return [Promotion(**json.loads(value)) for _, value in _history_tags(registry, mlflow_client)]


def _history_tags(registry: RegistrySettings, mlflow_client: Any) -> list[tuple[str, str]]:
    model = model_versions.registered_model(registry, mlflow_client)
    if model is None:
        raise PipelineError(f"no registered model '{registry.model_name}' yet: run `emotion run`")
    tags = model.tags
    return [(k, tags[k]) for k in sorted(tags) if k.startswith(HISTORY_PREFIX)]


def _generation(registry: RegistrySettings, mlflow_client: Any) -> str:
    """The ``champion_generation`` tag; a store from before the tag counts its history entries."""
    tags = mlflow_client.get_registered_model(registry.model_name).tags
    return tags.get(GENERATION_TAG) or f"{len(_history_tags(registry, mlflow_client))}:"


def _move_champion(
    registry: RegistrySettings, mlflow_client: Any, version: str, kind: str, actor: str, reason: str
) -> Promotion:
    """champion -> version, the old champion -> previous, tags and history; the caller holds the lock and lease.

    Compare-and-set on the registry: this move claims the next ``champion_generation`` with a unique token and,
    after moving the aliases, checks that the claim and the champion are still its own. A lost race (possible only
    when a lease expired under a stalled promoter) removes this move's history entry and raises StaleChampion, so
    the caller gates again against the champion that won. History keys carry generation and token: never reused.
    """
    name = registry.model_name
    number = int(_generation(registry, mlflow_client).split(":")[0]) + 1
    token = uuid.uuid4().hex[:12]
    claim, key = f"{number}:{token}", f"{HISTORY_PREFIX}{number:06d}.{token}"
    previous = _champion(registry, mlflow_client)
    _record_unrecorded_move(registry, mlflow_client, previous)
    event = Promotion(version, previous, kind, actor, reason, datetime.now(UTC).isoformat(timespec="seconds"))
    mlflow_client.set_registered_model_tag(name, GENERATION_TAG, claim)
    if previous and previous != version:
        model_versions.set_alias(registry, mlflow_client, model_versions.PREVIOUS, previous)
    model_versions.set_alias(registry, mlflow_client, model_versions.CHAMPION, version)
    fault_point("promote.champion_moved")
    for tag, value in (
        ("promoted_at", event.at),
        ("promoted_by", actor),
        ("promotion_reason", reason[:4000]),
        ("promotion_kind", kind),
    ):
        mlflow_client.set_model_version_tag(name, version, tag, value)
    mlflow_client.set_registered_model_tag(name, key, json.dumps(asdict(event)))
    now, champion = _generation(registry, mlflow_client), _champion(registry, mlflow_client)
    if now != claim or champion != version:
        mlflow_client.delete_registered_model_tag(name, key)
        _restore_aliases(registry, mlflow_client)
        raise StaleChampion(
            f"another promotion moved the champion while this one did (generation {claim} -> {now}, champion "
            f"{champion}): this promotion of version {version} is not recorded; see `emotion history`"
        )
    return event


def _record_unrecorded_move(registry: RegistrySettings, mlflow_client: Any, champion: str | None) -> None:
    """A promotion killed after it moved the champion and before it wrote history left a move nobody recorded: the
    champion differs from the last history entry. Write it down (kind ``recovered``) so history stays complete."""
    events = history(registry, mlflow_client)
    recorded = events[-1].version if events else None
    if champion is None or champion == recorded:
        return
    tags = mlflow_client.get_model_version(registry.model_name, champion).tags
    reason = (
        f"champion found on version {champion} while history ended at {recorded}: a promotion was interrupted "
        "after moving the alias; recorded by the next promotion"
    )
    event = Promotion(
        champion,
        recorded,
        "recovered",
        tags.get("promoted_by", "unknown"),
        reason,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    key = f"{HISTORY_PREFIX}{int(_generation(registry, mlflow_client).split(':')[0]):06d}.recovered"
    mlflow_client.set_registered_model_tag(registry.model_name, key, json.dumps(asdict(event)))
    log.warning("history: %s", reason)


def _restore_aliases(registry: RegistrySettings, mlflow_client: Any) -> None:
    """After a lost race: champion and previous as the last recorded promotion (the winner's) left them."""
    events = history(registry, mlflow_client)
    if events:
        model_versions.set_alias(registry, mlflow_client, model_versions.CHAMPION, events[-1].version)
        if events[-1].previous and events[-1].previous != events[-1].version:
            model_versions.set_alias(registry, mlflow_client, model_versions.PREVIOUS, events[-1].previous)


def required_reason(reason: str) -> str:
    """The reason as recorded: required (the history must say why), without URI passwords (tags keep it)."""
    if not reason.strip():
        raise PipelineError("--reason is empty: say why the champion moves (it is recorded with who and when)")
    return redact(reason.strip())


def promote(
    registry: RegistrySettings,
    mlflow_client: Any,
    version: str,
    *,
    actor: str,
    reason: str,
    kind: str = "manual",
    expected_champion: str | bool | None = False,
    force: bool = False,
) -> Promotion:
    """Make ``version`` the champion; the only writer of the champion alias.

    ``expected_champion`` (when not False) is the champion the gate compared against: if another run moved
    the champion meanwhile, StaleChampion is raised and nothing changes. A version that failed its gate is
    refused unless ``force``.
    """
    version = model_spec.version_number(version)
    name, reason = registry.model_name, required_reason(reason)
    try:
        target = mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if not connection.does_not_exist(exc):
            raise connection.unavailable(registry, f"read version {version} of {name}", exc) from exc
        raise PipelineError(f"{name} has no version {version}: see `emotion models`") from exc
    if target.tags.get("gate") == "failed" and not force:
        raise PipelineError(f"{name} version {version} failed its gate; use --force to promote it anyway")
    reason = _check_shadow(registry, target, reason, force) if kind == "manual" else reason
    with _lock(registry), _registry_lease(registry, mlflow_client, uuid.uuid4().hex):
        current = _champion(registry, mlflow_client)
        if expected_champion is not False and current != expected_champion:
            raise StaleChampion(f"the champion moved from {expected_champion} to {current} during this run")
        event = _move_champion(registry, mlflow_client, version, kind, actor, reason)
    log.info(
        "promoted %s version %s to champion (previous: %s) by %s: %s", name, version, event.previous, actor, reason
    )
    return event


def _check_shadow(registry: RegistrySettings, target: Any, reason: str, force: bool) -> str:
    """Refuse a manual promotion without the shadow evidence ``gate.min_shadow_*`` asks for; with ``force``, the
    reason recorded says what was overridden."""
    from pipeline.registry.shadow_stats import promotion_problem

    problem = promotion_problem(registry, target)
    if problem is None:
        return reason
    if not force:
        raise PipelineError(problem)
    log.warning("promoting anyway (--force): %s", problem)
    return f"{reason} [forced: {problem}]"


def rollback(registry: RegistrySettings, mlflow_client: Any, *, actor: str, reason: str) -> Promotion:
    """Give champion back to the version holding ``previous`` (the old champion becomes previous)."""
    reason = required_reason(reason)
    with _lock(registry), _registry_lease(registry, mlflow_client, uuid.uuid4().hex):
        target = model_versions.version_by_alias(registry, mlflow_client, model_versions.PREVIOUS)
        if target is None:
            raise PipelineError("no previous champion to roll back to (no version has the alias 'previous')")
        event = _move_champion(registry, mlflow_client, str(target.version), "rollback", actor, reason)
    log.info("rolled back %s to version %s (was %s)", registry.model_name, event.version, event.previous)
    return event
