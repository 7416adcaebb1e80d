"""Who is calling: the integration (n8n, by API key) or a client (by dashboard JWT).

Both arrive as `Authorization: Bearer <credential>`. The API key is compared in constant time;
anything else that looks like a JWT is checked as a dashboard token. Credentials are read from
the header only: a key in the query string is ignored.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from email_service.dashboard.sessions import authenticate_access_token
from email_service.exceptions import AuthenticationError
from email_service.models import Client, ClientSession


@dataclass(frozen=True)
class IntegrationPrincipal:
    """n8n or another integration holding OREE_API_KEY: sees every client."""

    is_authenticated: bool = True
    kind: str = "integration"
    pk: str = "integration"


@dataclass(frozen=True)
class ClientPrincipal:
    """A client's dashboard session: sees only its own client."""

    client: Client
    session: ClientSession
    is_authenticated: bool = True
    kind: str = "client"

    @property
    def pk(self) -> str:
        return str(self.client.pk)


def api_key_matches(credential: str) -> bool:
    return hmac.compare_digest(credential.encode(), settings.OREE_API_KEY.encode())


def _bearer_credential(request: Request) -> str | None:
    header = str(request.META.get("HTTP_AUTHORIZATION", ""))
    if not header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise exceptions.AuthenticationFailed(
            "Unsupported authorization scheme: use 'Authorization: Bearer <token>'.", code="unsupported_auth_scheme"
        )
    credential = credential.strip()
    if not credential or " " in credential:
        raise exceptions.AuthenticationFailed("Malformed bearer credential.", code="malformed_credential")
    return credential


class BearerAuthentication(BaseAuthentication):
    """Accepts the API key or a dashboard JWT; which one a view admits is its permission's job."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        credential = _bearer_credential(request)
        if credential is None:
            return None
        if api_key_matches(credential):
            return IntegrationPrincipal(), None
        if credential.count(".") != 2:
            raise exceptions.AuthenticationFailed("Invalid API key or token.", code="invalid_credential")
        try:
            session = authenticate_access_token(credential)
        except AuthenticationError as error:
            raise exceptions.AuthenticationFailed(error.detail, code=error.code) from None
        return ClientPrincipal(client=session.client, session=session), session

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="oreestats"'


class IsIntegration(BasePermission):
    """Only the API key."""

    message = "This route takes the integration API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, IntegrationPrincipal)


class IsClient(BasePermission):
    """Only a client's dashboard token."""

    message = "This route takes a client dashboard token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ClientPrincipal)


class IsIntegrationOrClient(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, IntegrationPrincipal | ClientPrincipal)


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "email_service.api.auth.BearerAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The integration API key (OREE_API_KEY) or a client dashboard JWT from /api/client/login.",
        }
