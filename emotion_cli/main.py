"""The `emotion` command: the same steps as the Prefect flow and the DVC stages, for people.

Heavy libraries are imported inside the commands, so `emotion --help` answers at once.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from emotion_cli import production, registry, steps
from emotion_cli.common import Command, RecipeAction
from pipeline import console
from pipeline.errors import DataValidationError, PipelineError

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # the default 20 s ran out on a busy 2-core machine
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a model download is no long work: no bar on the console
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar too
}

# what Ctrl-C leaves, by command: one line instead of a traceback
INTERRUPTED = {
    "score": "the scored shards are kept in OUT.parts/; run the same command again to resume",
    "run": "a started run is marked failed; continue it with `emotion run --resume RUN_ID` (its artifacts/runs/ name)",
    "tune": "finished trials are kept in the study; run `emotion tune` again to continue it",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, all of it on the console (run: not only in its log file)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", default=None, help="params file (default: ./params.yaml)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument(
            "--recipe",
            action=RecipeAction,
            metavar="NAME_OR_PATH",
            help="layer recipes/NAME.yaml (or a .yaml file) over the params file, before --set (repeatable)",
        )
        p.set_defaults(func=func)
        return p

    for group in (steps, registry, production):  # in this order in `emotion --help`
        group.add_commands(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    console.setup(args.verbose)  # `emotion run` narrows it to stage lines and a per-run log file
    code = 1
    try:
        code = args.func(args)
    except DataValidationError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        if exc.report is not None:
            print(exc.report.summary(), file=sys.stderr)
        code = 3
    except PipelineError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = _report_interrupt(args.command)
    except Exception as exc:
        if not _raised_by_interrupt(exc):
            raise
        code = _report_interrupt(args.command)
    finally:
        if code not in (0, 130) and (log_file := console.run_log()) is not None:
            print(f"log: {log_file}", file=sys.stderr)
    return code


def _report_interrupt(command: str) -> int:
    """One line saying what a Ctrl-C left behind and how to go on; the exit status a shell gives SIGINT (130)."""
    log_file = console.run_log()
    where = f" (log: {log_file})" if log_file is not None else ""
    print(f"\ninterrupted: {INTERRUPTED.get(command, 'stopped')}{where}", file=sys.stderr)
    return 130


def _raised_by_interrupt(exc: BaseException) -> bool:
    """True when ``exc`` was raised while a KeyboardInterrupt was being handled: a library that turns a Ctrl-C into
    its own error (Prefect's "Task run is not set" when it lands as a task run starts; found by CI) must still end
    as an interruption, not as a traceback and exit 1."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@dataclass
class _ExitStatus:
    """The command's exit status, for the exit that skips the interpreter's teardown."""

    code: int = 1  # an exception main() does not catch: Python's own status after printing its traceback

    def exit_now(self) -> None:
        """Registered with atexit before any library registers its own handler, so it runs after all of them (a
        temporary Prefect server stopped, MLflow's and Ray's clean-ups done); then flushes the log files and the
        console and ends the process. What it skips is the interpreter's teardown of every loaded module, which
        took 1 to 5 s after a command that loaded torch, MLflow, Prefect, GX or Evidently (measured on 2 cores):
        time every `emotion` command paid after its last line, and the suite thousands of times."""
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None and not stream.closed:
                stream.flush()
        os._exit(self.code)


def _deliver_lost_interrupts(unraisable: Any) -> None:
    """``sys.unraisablehook``: a Ctrl-C whose KeyboardInterrupt was raised while a weakref callback or ``__del__``
    ran (an SQLAlchemy state clean-up, once in CI) is swallowed there, and the run went on to register a model.
    Send SIGINT again, so that the interrupt lands in the code that runs next; anything else is reported as usual."""
    if unraisable.exc_type is KeyboardInterrupt:  # raised here, it would be swallowed again: sent from a thread
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    sys.__unraisablehook__(unraisable)


def entry() -> None:
    """The `emotion` console script and ``python -m emotion_cli``: ``main``, then a fast exit (``_ExitStatus``);
    a Ctrl-C that cannot be lost (``_deliver_lost_interrupts``). Tests call ``main`` itself, which never ends the
    calling process."""
    status = _ExitStatus()
    atexit.register(status.exit_now)
    sys.unraisablehook = _deliver_lost_interrupts
    try:
        status.code = main()
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        status.code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    sys.exit(status.code)
