"""What every command shares: the config from its flags, the actor recorded with registry changes, quiet Prefect
tracebacks for user errors, and the metric format of the summaries."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from pipeline.config import Config, load_config_from_env
from pipeline.errors import PipelineError


class RecipeAction(argparse.Action):
    """``--recipe NAME`` becomes the override ``recipes=[...]``: flows that re-read the config from the params file
    and the overrides (scheduled deployments, drift-triggered retraining) then use the same recipes."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option_string: Any = None) -> None:
        names = [*(getattr(namespace, self.dest) or []), value]
        setattr(namespace, self.dest, names)
        namespace.set = [*(namespace.set or []), f"recipes={json.dumps(names)}"]


def config(args: argparse.Namespace) -> Config:
    return load_config_from_env(args.config, args.set)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; for a PipelineError the message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_error_tracebacks() -> None:
    """Before a Prefect flow runs: its task and flow loggers drop the traceback of a PipelineError."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())


def actor() -> str:
    import getpass

    return os.environ.get("EMOTION_ACTOR") or getpass.getuser()


def ci(metrics: dict[str, float], key: str) -> str:
    """``0.8123 [0.79, 0.83]``: the point value and its bootstrap interval, when the metrics have one."""
    text = f"{metrics[key]:.4f}"
    return text + (
        f" [{metrics[key + '_ci_low']:.2f}, {metrics[key + '_ci_high']:.2f}]" if key + "_ci_low" in metrics else ""
    )


Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]  # name, function, help -> its parser
