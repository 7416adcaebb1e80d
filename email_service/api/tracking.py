"""Routes for recipients' mail clients (pixel, click, unsubscribe) and n8n's reply report.

The pixel and the click are the hot path (DESIGN.md decision 7). `TrackingFastPathMiddleware`
sits first in MIDDLEWARE and answers `/api/track/open/` and `/api/track/click/` itself, so no
session, authentication, CSRF or messages middleware and no URL resolution runs for them; Django
still opens and closes the request (signals, database connection handling). The DRF views below
serve the same functions when the middleware is not installed, and describe the routes in the
OpenAPI schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, StaticHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.api.adapters import error_json, parse_body, respond
from email_service.api.auth import BearerAuthentication, IsIntegration
from email_service.inbound import replies, suppression
from email_service.tracking import hits as tracking

logger = logging.getLogger(__name__)

OPEN_PREFIX = "/api/track/open/"
CLICK_PREFIX = "/api/track/click/"
NO_STORE = "no-store, no-cache, must-revalidate, private, max-age=0"


# ---------------------------------------------------------------------------------------------
# The hot path
# ---------------------------------------------------------------------------------------------


def pixel_response(method: str) -> HttpResponse:
    """The constant pixel: same headers for GET and HEAD, no body for HEAD."""
    response = HttpResponse(b"" if method == "HEAD" else tracking.PIXEL_PNG, content_type="image/png")
    response["Content-Length"] = str(len(tracking.PIXEL_PNG))
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _method_not_allowed() -> JsonResponse:
    response = error_json("Method not allowed.", "method_not_allowed", status=405)
    response["Allow"] = "GET, HEAD"
    return response


def serve_open(request: HttpRequest, pixel_file: str) -> HttpResponse:
    """Always the pixel; the hit is buffered (or, without Redis, recorded here). Never fails."""
    method = (request.method or "GET").upper()
    if method not in ("GET", "HEAD"):
        return _method_not_allowed()
    token = pixel_file.removesuffix(".png")
    try:
        if tracking.TOKEN_RE.match(token):
            facts = tracking.hit_facts(method=method, meta=request.META)
            if not tracking.buffer_open(token=token, facts=facts):
                tracking.record_open_now(token=token, facts=facts)
    except Exception:
        logger.exception("Could not record an open")
    return pixel_response(method)


def _not_found() -> JsonResponse:
    return error_json("Unknown link.", "link_not_found", status=404)


def serve_click(request: HttpRequest, token: str) -> HttpResponse:
    """302 to the destination stored for this token; nothing in the request can change where."""
    method = (request.method or "GET").upper()
    if method not in ("GET", "HEAD"):
        return _method_not_allowed()
    facts = tracking.hit_facts(method=method, meta=request.META)
    try:
        outcome = tracking.track_click(token=token, facts=facts)
    except DatabaseError:
        logger.exception("Could not look up a tracked link")
        return error_json("Try again shortly.", "unavailable", status=503)
    url = outcome.url
    # Defence in depth: only http(s) destinations were ever stored.
    if url is None or not url.lower().startswith(("http://", "https://")):
        return _not_found()
    if not outcome.buffered and outcome.link is not None:
        try:
            tracking.record_click_now(link=outcome.link, facts=facts)
        except Exception:
            logger.exception("Could not record a click")
    response = HttpResponseRedirect(url)  # it sets Location through iri_to_uri itself
    response["Cache-Control"] = NO_STORE
    # The click URL carries our token: do not pass it on to the destination as a Referer.
    response["Referrer-Policy"] = "no-referrer"
    return response


class TrackingFastPathMiddleware:
    """Answers the pixel and click paths before any other middleware runs (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith(OPEN_PREFIX):
            rest = path[len(OPEN_PREFIX) :]
            if "/" not in rest:
                return serve_open(request, rest)
        elif path.startswith(CLICK_PREFIX):
            rest = path[len(CLICK_PREFIX) :]
            return serve_click(request, rest) if "/" not in rest else _not_found()
        return self.get_response(request)


class _PngRenderer(BaseRenderer):
    media_type = "image/png"
    format = "png"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data if isinstance(data, bytes) else b""


class TrackOpenView(APIView):
    """A 1x1 transparent PNG, uncacheable, served for any id; records an open."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    renderer_classes = [_PngRenderer]

    @extend_schema(
        operation_id="track_open",
        auth=[],
        responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The pixel.")},
    )
    def get(self, request: Request, pixel_id: str) -> HttpResponse:
        return serve_open(request._request, pixel_id)

    def head(self, request: Request, pixel_id: str) -> HttpResponse:
        return serve_open(request._request, pixel_id)


class TrackClickView(APIView):
    """302 to the link's stored destination and records a click; an unknown id is 404, never a redirect."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="track_click",
        auth=[],
        responses={
            302: OpenApiResponse(description="Redirect to the stored destination (Location header)."),
            404: inline_serializer(
                "LinkNotFound", {"detail": serializers.CharField(), "code": serializers.CharField()}
            ),
        },
    )
    def get(self, request: Request, click_id: str) -> HttpResponse:
        return serve_click(request._request, click_id)

    def head(self, request: Request, click_id: str) -> HttpResponse:
        return serve_click(request._request, click_id)


# ---------------------------------------------------------------------------------------------
# Reply report (n8n)
# ---------------------------------------------------------------------------------------------


class ReplyReportSerializer(serializers.Serializer[dict[str, Any]]):
    gmail_thread_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
    in_reply_to = serializers.CharField(required=False, allow_blank=True, max_length=998)
    lead_id = serializers.UUIDField(required=False)
    client_id = serializers.UUIDField(required=False)
    gmail_message_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
    from_email = serializers.EmailField(required=False, allow_blank=True)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=998, trim_whitespace=False)
    body = serializers.CharField(required=False, allow_blank=True, max_length=200_000, trim_whitespace=False)
    snippet = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    received_at = serializers.DateTimeField(required=False)
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=2000, trim_whitespace=False),
        required=False,
        help_text="The reply's headers (e.g. Auto-Submitted, X-Autoreply, Precedence), used to tell a "
        "person's reply from an auto-reply or a bounce.",
    )

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 100:
            raise serializers.ValidationError("At most 100 headers.")
        return value


class ReplyResultSerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=["recorded", "duplicate"])
    kind = serializers.CharField()
    event_id = serializers.IntegerField(allow_null=True)
    queue_id = serializers.UUIDField()
    lead_id = serializers.UUIDField()
    client_id = serializers.UUIDField()
    sequence_number = serializers.IntegerField()
    cancelled_followups = serializers.IntegerField()


class ReplyView(APIView):
    """n8n reports a reply: matched by Gmail thread, then our Message-ID, then lead. Idempotent."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegration]

    @extend_schema(
        operation_id="track_reply",
        request=ReplyReportSerializer,
        responses={
            201: ReplyResultSerializer,
            200: ReplyResultSerializer,
            404: OpenApiResponse(
                inline_serializer(
                    "ReplyNotMatched", {"detail": serializers.CharField(), "code": serializers.CharField()}
                ),
                description="No message or lead of ours matches the report.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        result = replies.report_reply(**parse_body(request, ReplyReportSerializer))
        message = result.message
        body = {
            "status": "recorded" if result.created else "duplicate",
            "kind": result.kind,
            "event_id": result.event.pk if result.event else None,
            "queue_id": message.pk,
            "lead_id": message.lead_id,
            "client_id": message.client_id,
            "sequence_number": message.sequence_number,
            "cancelled_followups": result.stopped,
        }
        return respond(ReplyResultSerializer, body, status=201 if result.created else 200)


# ---------------------------------------------------------------------------------------------
# Unsubscribe (/u/<token>)
# ---------------------------------------------------------------------------------------------


# RFC 8058: the body a mail client's one-click POST carries; the page's button sends the same.
UnsubscribeFormSerializer = inline_serializer(
    "UnsubscribeForm",
    {
        "List-Unsubscribe": serializers.ChoiceField(choices=["One-Click"]),
        "button": serializers.CharField(required=False, help_text="Sent by the confirmation page's button."),
    },
)


class UnsubscribeView(APIView):
    """GET shows a confirmation page and changes nothing; POST (RFC 8058 one-click or the button) unsubscribes."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    parser_classes = [FormParser, MultiPartParser]
    renderer_classes = [StaticHTMLRenderer]
    template_name = "email_service/unsubscribe.html"

    def _page(self, request: Request, *, state: str, status: int, token: str = "") -> HttpResponse:
        response = render(request._request, self.template_name, {"state": state, "token": token}, status=status)
        response["Cache-Control"] = NO_STORE
        response["X-Robots-Tag"] = "noindex"
        response["Referrer-Policy"] = "no-referrer"
        return response

    @extend_schema(
        operation_id="unsubscribe_page",
        auth=[],
        responses={(200, "text/html"): OpenApiTypes.STR, (404, "text/html"): OpenApiTypes.STR},
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        message = suppression.message_for_unsubscribe_token(token)
        if message is None:
            return self._page(request, state="unknown", status=404)
        state = "done" if message.unsubscribed_at else "confirm"
        return self._page(request, state=state, status=200, token=token)

    @extend_schema(
        operation_id="unsubscribe_one_click",
        auth=[],
        request={
            "application/x-www-form-urlencoded": UnsubscribeFormSerializer,
            "multipart/form-data": UnsubscribeFormSerializer,
        },
        responses={
            (200, "text/html"): OpenApiTypes.STR,
            (400, "text/html"): OpenApiTypes.STR,
            (404, "text/html"): OpenApiTypes.STR,
        },
    )
    def post(self, request: Request, token: str) -> HttpResponse:
        message = suppression.message_for_unsubscribe_token(token)
        if message is None:
            return self._page(request, state="unknown", status=404)
        try:
            value = request.data.get("List-Unsubscribe", "")
        except Exception:  # noqa: BLE001 - an unparsable body is the sender's mistake, never a 500
            value = ""
        if str(value).strip().lower() != "one-click":
            return self._page(request, state="invalid", status=400, token=token)
        suppression.unsubscribe(message=message, source="one_click" if "button" not in request.data else "page")
        return self._page(request, state="done", status=200)
