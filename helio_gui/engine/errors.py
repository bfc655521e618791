"""Errors of the engine package: every one says what went wrong and what to do."""

from __future__ import annotations


class EngineError(RuntimeError):
    """An engine operation failed. `message` says what happened, `hint` what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message if not hint else f"{message} {hint}")
        self.message = message
        self.hint = hint


class Cancelled(EngineError):
    """The operation was cancelled by the caller before its point of no return."""

    def __init__(self, message: str = "Cancelled.", hint: str = "") -> None:
        super().__init__(message, hint)


class ImageRejected(EngineError):
    """The image is missing, unlabelled, incompatible or for another architecture."""
