"""Domain errors raised by services; one DRF exception handler maps them to HTTP answers."""

from __future__ import annotations

from typing import Any


class OreeError(Exception):
    """Base of every domain error: a human `detail` and a stable machine-readable `code`."""

    status_code = 400
    default_code = "invalid"

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.field = field
        self.extra = extra


class InvalidInput(OreeError):
    """The request is well-formed but a value is not acceptable (400)."""


class AuthenticationError(OreeError):
    """No valid credentials (401)."""

    status_code = 401
    default_code = "not_authenticated"


class NotFound(OreeError):
    """The object does not exist, or belongs to someone else (404: never reveal which)."""

    status_code = 404
    default_code = "not_found"


class Conflict(OreeError):
    """The request contradicts the current state (409)."""

    status_code = 409
    default_code = "conflict"


class Throttled(OreeError):
    """Too many attempts; try again after `retry_after` seconds (429)."""

    status_code = 429
    default_code = "throttled"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class DependencyFailed(OreeError):
    """A service we depend on (Google) could not be reached; the caller may retry (424).

    Not a 5xx: CONTRACT.md keeps those for our own bugs (and /api/health's documented 503).
    """

    status_code = 424
    default_code = "dependency_failed"


class PayloadTooLarge(OreeError):
    """The request or one of its values is larger than the documented limit (413)."""

    status_code = 413
    default_code = "too_large"
