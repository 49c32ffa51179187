"""The exceptions growsearch raises on purpose.

Every error a user can fix is a ``UserError``: the CLI prints its message alone (no traceback)
and exits with code 2. Everything else is a bug or an environment fault and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GrowsearchError",
    "NotExactError",
    "PreservationError",
    "SpecError",
    "StorageError",
    "TrainingDivergedError",
    "TransformError",
    "UserError",
]


class GrowsearchError(Exception):
    """Base class of all growsearch exceptions."""


class UserError(GrowsearchError):
    """Bad input the user can fix; the CLI reports it in one message and exits with code 2."""

    exit_code = 2


class ConfigError(UserError):
    """study.yaml (or an override) is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{head}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{head}{len(self.problems)} problems:\n{lines}"
        super().__init__(msg)


class SpecError(UserError):
    """An architecture spec is malformed or its shapes do not fit together."""


class StorageError(UserError):
    """A storage URL is malformed, unreachable, or holds a schema of another version."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, tampered with, or does not match its spec."""


class TransformError(GrowsearchError):
    """A growth operation cannot be applied at the requested place (the message says why)."""


class NotExactError(TransformError):
    """An operation that must preserve the function cannot do so at this place."""


class PreservationError(GrowsearchError):
    """A child differs from its parent by more than the tolerance before training."""

    def __init__(self, operation: str, error: float, tolerance: float) -> None:
        self.operation = operation
        self.error = error
        self.tolerance = tolerance
        super().__init__(
            f"child from '{operation}' differs from its parent by {error:.3e} "
            f"(tolerance {tolerance:.3e}) before training; the child was refused"
        )


class TrainingDivergedError(GrowsearchError):
    """The training loss became NaN or infinite (the trial fails with this reason)."""
