"""The one exception type for problems a user can cause and fix (bad data, bad config, missing model)."""


class PipelineError(Exception):
    """A user-facing failure: the message says what is wrong and what to do.

    The CLI prints it without a traceback and exits non-zero.
    """


class DataValidationError(PipelineError):
    """The dataset failed validation; ``report`` holds the per-check results."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
