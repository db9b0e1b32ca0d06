"""Errors a user can act on: each names the file, the field and what was expected."""
from __future__ import annotations


class HarnessError(Exception):
    """Base class: a one-paragraph message for a person, and an exit code."""

    exit_code = 1

    def __init__(self, problem: str, *, file: str | None = None, field: str | None = None,
                 expected: str | None = None, got: object = None, hint: str | None = None):
        self.problem = problem
        self.file = file
        self.field = field
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:")
        if self.field:
            parts.append(f"field '{self.field}':")
        parts.append(self.problem.rstrip(".") + ".")
        if self.expected is not None:
            parts.append(f"Expected {self.expected}.")
        if self.got is not None:
            parts.append(f"Got {self.got!r}.")
        if self.hint:
            parts.append(self.hint.rstrip(".") + ".")
        return " ".join(parts)


class ConfigError(HarnessError):
    """The configuration file or a command-line value is wrong."""

    exit_code = 2


class DataError(HarnessError):
    """An input data file is missing, unreadable or malformed."""


class StepFailed(HarnessError):
    """A pipeline step failed; carries the step name."""

    def __init__(self, step: str, problem: str, **kw):
        self.step = step
        super().__init__(problem, **kw)


class GateFailed(HarnessError):
    """The evaluation gate stopped the pipeline: the model is below the threshold."""


class Interrupted(HarnessError):
    """The run was stopped by Ctrl-C or a termination signal; it can be resumed."""

    exit_code = 130
