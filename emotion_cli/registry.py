"""Commands on the model registry: gate and register, list versions, promote, roll back, show the history."""

from __future__ import annotations

import argparse
import json
from typing import Any

from emotion_cli.common import AddCommand, actor, config


def cmd_register(args: argparse.Namespace) -> int:
    from pipeline import stages

    cfg = config(args)
    result = stages.register_artifacts(cfg, actor=f"emotion register by {actor()}")
    print(f"gate      {'PASSED' if result.verdict.passed else 'FAILED'}")
    lines = result.verdict.reasons + [note for note in result.notes if note not in result.verdict.reasons]
    print("\n".join(f"          {line}" for line in lines))
    print(f"registry  {cfg.mlflow.registered_model} version {result.version} -> aliases: {', '.join(result.aliases)}")
    if not result.promoted:
        before = f"version {result.champion_before}" if result.champion_before else "none yet"
        print(f"          champion unchanged ({before})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pipeline.registry import connection, model_versions

    cfg = config(args)
    rows = model_versions.list_versions(cfg.registry, connection.client(cfg.registry))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'version':>7}  {'aliases':<28} {'gate':<7} {'accuracy':>8} {'macro_f1':>8}  {'created (UTC)':<25} data_hash"
    )
    for r in rows:
        print(
            f"{r['version']:>7}  {','.join(r['aliases']) or '-':<28} {r['gate'] or '-':<7} {r['accuracy'] or '-':>8} "
            f"{r['macro_f1'] or '-':>8}  {r['created']:<25} {r['data_hash'] or '-'}"
        )
    return 0


def _print_event(event: Any) -> None:
    print(
        f"{event.kind}: champion -> version {event.version} (previous: {event.previous or 'none'}) "
        f"by {event.actor} at {event.at}: {event.reason}"
    )


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.registry import champion_alias, connection, model_spec

    cfg = config(args)
    model_spec.version_number(args.version)  # the arguments before the store: a typo is named, nothing is opened
    champion_alias.required_reason(args.reason)
    _print_event(
        champion_alias.promote(
            cfg.registry,
            connection.client(cfg.registry),
            str(args.version),
            actor=actor(),
            reason=args.reason,
            kind="manual",
            force=args.force,
        )
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.registry import champion_alias, connection

    cfg = config(args)
    champion_alias.required_reason(args.reason)
    _print_event(
        champion_alias.rollback(cfg.registry, connection.client(cfg.registry), actor=actor(), reason=args.reason)
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.registry import champion_alias, connection

    cfg = config(args)
    events = champion_alias.history(cfg.registry, connection.client(cfg.registry))
    if args.json:
        print(json.dumps([asdict(e) for e in events], indent=2))
    for event in [] if args.json else events:
        _print_event(event)
    return 0


def add_commands(add: AddCommand) -> None:
    add("register", cmd_register, "gate the evaluated artifacts/model against the champion, register it, promote it")
    models = add("models", cmd_models, "list registered versions: aliases, gate, metrics, creation time, data hash")
    models.add_argument("--json", action="store_true", help="print as JSON")
    promote = add("promote", cmd_promote, "make VERSION the champion (the old champion becomes 'previous')")
    promote.add_argument("version", help="the model version to promote")
    promote.add_argument("--reason", required=True, help="why, recorded with who and when")
    promote.add_argument("--force", action="store_true", help="promote even if the version failed its gate")
    rollback = add("rollback", cmd_rollback, "give champion back to the 'previous' version")
    rollback.add_argument("--reason", required=True, help="why, recorded with who and when")
    history = add("history", cmd_history, "the promotion and rollback history")
    history.add_argument("--json", action="store_true", help="print as JSON")
