"""One exception handler for the whole API: every error is `{"detail", "code"}` with a 4xx status."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from email_service.exceptions import OreeError, Throttled

logger = logging.getLogger(__name__)


def _first_error(detail: Any, prefix: str = "") -> tuple[str, str, str]:
    """The first (field, message, code) in a DRF error structure, depth first."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            field = f"{prefix}.{name}" if prefix and name else (name or prefix)
            return _first_error(value, field)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], prefix)
    if isinstance(detail, drf_exceptions.ErrorDetail):
        return prefix, str(detail), detail.code or "invalid"
    return prefix, str(detail), "invalid"


def error_body(detail: Any) -> dict[str, Any]:
    """`{"detail", "code", "field"?, "errors"?}` for a DRF validation error structure."""
    field, message, code = _first_error(detail)
    body: dict[str, Any] = {"detail": f"{field}: {message}" if field else message, "code": code}
    if field:
        body["field"] = field
    if isinstance(detail, dict | list):
        body["errors"] = detail
    return body


def _validation_response(detail: Any) -> Response:
    return Response(error_body(detail), status=400)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OreeError):
        body: dict[str, Any] = {"detail": exc.detail, "code": exc.code}
        if exc.field:
            body["field"] = exc.field
        body.update(exc.extra)
        response = Response(body, status=exc.status_code)
        if isinstance(exc, Throttled):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return _validation_response({key: [str(m) for m in value] for key, value in exc.message_dict.items()})
        return _validation_response(list(exc.messages))
    if isinstance(exc, drf_exceptions.ValidationError):
        return _validation_response(exc.detail)

    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    handled = drf_exception_handler(exc, context)
    if handled is None:
        logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
        return Response({"detail": "Internal server error.", "code": "server_error"}, status=500)
    assert isinstance(exc, drf_exceptions.APIException)
    codes = exc.get_codes()
    handled.data = {"detail": str(exc.detail), "code": codes if isinstance(codes, str) else exc.default_code}
    return handled


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django's 404 for non-DRF routes: JSON, without echoing the path."""
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    """Django's 500: no internals in the body (the error is logged)."""
    return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)


def json_forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Forbidden.", "code": "permission_denied"}, status=403)
