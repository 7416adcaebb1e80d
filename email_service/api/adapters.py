"""The one parse-and-respond seam the API views share.

A view reads its input with `parse_body` / `parse_query` (a DRF serializer validates it; a bad value
becomes the handler's 400 `{"detail", "code"}`), calls one function of a sub-domain room, and answers
with `respond` (the response serializer shapes the payload). Plain Django views on the tracking hot
path answer their errors with `error_json`, the same body the DRF handler writes.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from email_service.exceptions import InvalidInput, PayloadTooLarge

Shape = type[serializers.BaseSerializer[Any]]


def json_body(request: Request) -> Any:
    """The parsed body; one too large for DATA_UPLOAD_MAX_MEMORY_SIZE is a 413, not a 500."""
    try:
        return request.data
    except RequestDataTooBig:
        raise PayloadTooLarge("The request body is too large.", code="request_too_large") from None


def json_object(request: Request, *, what: str = "fields") -> dict[str, Any]:
    """The body, which must be one JSON object."""
    body = json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"The body must be a JSON object of {what}.", code="invalid_body")
    return body


def parse(shape: Shape, data: Any, **context: Any) -> Any:
    """`data` validated by `shape`; the serializer itself when the caller needs more than its data."""
    incoming = shape(data=data, context=context)
    incoming.is_valid(raise_exception=True)
    return incoming


def parse_body(request: Request, shape: Shape) -> dict[str, Any]:
    return dict(parse(shape, json_body(request)).validated_data)


def parse_query(request: Request, shape: Shape) -> dict[str, Any]:
    return dict(parse(shape, request.query_params).validated_data)


def respond(shape: Shape, payload: Any, *, status: int = 200, many: bool = False) -> Response:
    return Response(shape(payload, many=many).data, status=status)


def error_json(detail: str, code: str, *, status: int) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)
