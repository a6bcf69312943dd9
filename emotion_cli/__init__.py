"""The `emotion` command, a driver of the pipeline beside the Prefect flows: `pipeline/` never imports it.

Commands are grouped by what they do: ``steps`` (build a model), ``registry`` (register, promote, roll back) and
``production`` (predict, score, serve, monitor, schedule); ``main`` builds the parser and maps errors to exit codes.
"""

from emotion_cli.main import QUIET_ENV, build_parser, main
from emotion_cli.steps import format_summary

__all__ = ["QUIET_ENV", "build_parser", "format_summary", "main"]
