"""The one exception type for problems a user can cause and fix (bad data, bad config, missing model)."""

from typing import Protocol


class PipelineError(Exception):
    """A user-facing failure: the message says what is wrong and what to do.

    The CLI prints it without a traceback and exits non-zero.
    """


class Report(Protocol):
    """What the CLI needs of a validation report: its readable summary."""

    def summary(self) -> str: ...


class DataValidationError(PipelineError):
    """The dataset failed validation; ``report`` holds the per-check results."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report
