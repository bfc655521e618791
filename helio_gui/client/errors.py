"""Errors the runtime client raises: each message says what went wrong and what to do."""

from __future__ import annotations


class ClientError(RuntimeError):
    """Base of the client's errors."""


class RuntimeUnreachable(ClientError):
    """The runtime did not answer (not running, wrong address, timed out)."""


class ApiError(ClientError):
    """The runtime answered with an error status; `status`, `body` and `errors` (422) are kept."""

    def __init__(self, message: str, status: int = 0, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}
        # 422 from PUT /api/recipe: [{"line", "field", "message"}]
        self.errors: list[dict] = list(self.body.get("errors") or [])
