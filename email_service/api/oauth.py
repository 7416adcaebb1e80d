"""Connecting a Gmail mailbox: the initiate route (API key or the client's JWT) and Google's callback."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.api.auth import BearerAuthentication, ClientPrincipal, IsIntegrationOrClient
from email_service.exceptions import NotFound, OreeError
from email_service.mailboxes.oauth import complete_mailbox_connection, start_mailbox_connection
from email_service.models import Client


def wants_json(request: Request) -> bool:
    return "application/json" in str(request.META.get("HTTP_ACCEPT", "")).lower()


class ErrorSerializer(serializers.Serializer[dict[str, str]]):
    detail = serializers.CharField()
    code = serializers.CharField()


class AuthorizationUrlSerializer(serializers.Serializer[dict[str, str]]):
    authorization_url = serializers.URLField(help_text="Google's consent page; send the user's browser there.")


class ConnectedMailboxSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    status = serializers.CharField()


class CallbackResultSerializer(serializers.Serializer[dict[str, Any]]):
    mailbox = ConnectedMailboxSerializer()
    created = serializers.BooleanField(help_text="False when an existing mailbox of this client was reconnected.")
    resumed_emails = serializers.IntegerField(help_text="Emails held while it was disconnected, queued again.")
    redirect_to = serializers.CharField(help_text="The local dashboard path the browser is sent to.")


class OAuthInitiateView(APIView):
    """Start connecting a Gmail mailbox to a client: Google's consent page (302, or JSON)."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegrationOrClient]

    @extend_schema(
        operation_id="oauth_initiate",
        parameters=[
            OpenApiParameter(
                "return_to", str, description="Local path to come back to afterwards (default /dashboard/mailboxes/)."
            ),
            OpenApiParameter("login_hint", str, description="The Gmail address to suggest on Google's sign-in."),
        ],
        responses={
            200: OpenApiResponse(AuthorizationUrlSerializer, description="With `Accept: application/json`."),
            302: OpenApiResponse(description="Redirect to Google's consent page."),
            400: ErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def get(self, request: Request, client_id: uuid.UUID) -> HttpResponseBase:
        principal: object = request.user  # our principals are not Django users
        if isinstance(principal, ClientPrincipal):
            initiated_by = "client"
            # Another client's id answers as if it did not exist.
            client = principal.client if principal.client.pk == client_id else None
        else:
            initiated_by = "api_key"
            client = Client.objects.filter(pk=client_id, is_active=True).first()
        if client is None:
            raise NotFound("No such client.")
        url = start_mailbox_connection(
            client=client,
            initiated_by=initiated_by,
            return_to=request.query_params.get("return_to"),
            login_hint=request.query_params.get("login_hint") or None,
        )
        if wants_json(request):
            return Response({"authorization_url": url})
        return HttpResponseRedirect(url)


class OAuthCallbackView(APIView):
    """Google's redirect after consent: connect the mailbox, then back to the dashboard (or JSON)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="oauth_callback",
        parameters=[
            OpenApiParameter("state", str, required=True, description="Our signed, single-use state."),
            OpenApiParameter("code", str, description="Google's authorisation code."),
            OpenApiParameter("error", str, description="Google's error, e.g. access_denied."),
            OpenApiParameter("scope", str, description="The scopes Google says it granted."),
        ],
        responses={
            200: OpenApiResponse(CallbackResultSerializer, description="With `Accept: application/json`."),
            302: OpenApiResponse(description="Redirect to the dashboard's mailbox page."),
            (400, "application/json"): ErrorSerializer,
            (400, "text/html"): OpenApiTypes.STR,
            (409, "application/json"): ErrorSerializer,
            (409, "text/html"): OpenApiTypes.STR,
            (424, "application/json"): OpenApiResponse(
                ErrorSerializer,
                description="`google_unavailable`: Google's token endpoint could not be reached; connect again.",
            ),
            (424, "text/html"): OpenApiTypes.STR,
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        params = {key: str(value) for key, value in request.query_params.items()}
        try:
            result = complete_mailbox_connection(params=params)
        except OreeError as error:
            if wants_json(request):
                raise
            return self._error_page(request, error)
        if wants_json(request):
            mailbox = result.mailbox
            return Response(
                {
                    "mailbox": {"id": mailbox.pk, "email": mailbox.email, "status": mailbox.status},
                    "created": result.created,
                    "resumed_emails": result.resumed_emails,
                    "redirect_to": result.return_to,
                }
            )
        return HttpResponseRedirect(result.return_to)

    @staticmethod
    def _error_page(request: Request, error: OreeError) -> HttpResponse:
        context = {"detail": error.detail, "code": error.code, "retry_to": "/dashboard/mailboxes/"}
        response = render(request._request, "email_service/oauth_error.html", context, status=error.status_code)
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"  # the URL carries Google's code and our state
        return response
