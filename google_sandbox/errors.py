"""Errors in the exact JSON shapes Google's endpoints answer with."""

from __future__ import annotations

import json
from typing import Any

_STATUS_TEXT = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """A Google API (Gmail) error: ``{"error": {"code", "message", "errors", "status"}}``."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        *,
        domain: str = "global",
        status: str | None = None,
        detail_message: str | None = None,
        extra: dict[str, str] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.status = status or _STATUS_TEXT.get(code, "UNKNOWN")
        self.detail_message = detail_message or message
        self.extra = extra or {}
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "message": self.detail_message,
            "domain": self.domain,
            "reason": self.reason,
        }
        detail.update(self.extra)
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [detail],
                "status": self.status,
            }
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.body(), indent=2).encode()


class OAuthError(Exception):
    """An OAuth 2.0 endpoint error: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def to_bytes(self) -> bytes:
        return json.dumps({"error": self.error, "error_description": self.description}).encode()


class ControlError(Exception):
    """A bad request to the sandbox's own control API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found() -> ApiError:
    return ApiError(404, "Requested entity was not found.", "notFound")


def invalid_argument(message: str, reason: str = "invalidArgument") -> ApiError:
    return ApiError(400, message, reason)


def unauthenticated(missing: bool = False) -> ApiError:
    if missing:
        message = (
            "Request is missing required authentication credential. Expected OAuth 2 access"
            " token, login cookie or other valid authentication credential. See"
            " https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
        reason, detail = "required", "Login Required."
    else:
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token,"
            " login cookie or other valid authentication credential. See"
            " https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
        reason, detail = "authError", "Invalid Credentials"
    return ApiError(
        401,
        message,
        reason,
        detail_message=detail,
        extra={"location": "Authorization", "locationType": "header"},
        headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')],
    )


def insufficient_scopes() -> ApiError:
    return ApiError(
        403,
        "Request had insufficient authentication scopes.",
        "insufficientPermissions",
        detail_message="Insufficient Permission",
    )


def rate_limited(retry_at: str) -> ApiError:
    message = f"User-rate limit exceeded.  Retry after {retry_at}"
    return ApiError(429, message, "rateLimitExceeded", domain="usageLimits")


def daily_limit() -> ApiError:
    return ApiError(403, "Daily Limit Exceeded", "dailyLimitExceeded", domain="usageLimits")


def backend_error() -> ApiError:
    return ApiError(500, "Backend Error", "backendError")


def unavailable() -> ApiError:
    return ApiError(503, "The service is currently unavailable.", "backendError")
