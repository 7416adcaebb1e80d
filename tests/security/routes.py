"""Every route of the URL configuration with the audience its view admits, for the security matrices."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny

from email_service.api.auth import IsClient, IsIntegration, IsIntegrationOrClient

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    route: str  # Django's pattern, e.g. "api/client/campaigns/<uuid:campaign_id>/pause"
    method: str
    audience: str  # "integration", "client", "integration_or_client", "public", "admin", "page"

    @property
    def id(self) -> str:
        return f"{self.method.upper()} /{self.route}"


def _walk(patterns, prefix: str):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _audience(route: str, pattern: URLPattern) -> str:
    if route.startswith("admin/"):
        return "admin"
    view_class = getattr(pattern.callback, "view_class", None)
    permissions = getattr(view_class, "permission_classes", None)
    if view_class is None or permissions is None:
        return "page"  # plain Django views: dashboard shells, redirects
    permissions = set(permissions)
    if permissions == {IsIntegration}:
        return "integration"
    if permissions == {IsClient}:
        return "client"
    if permissions == {IsIntegrationOrClient}:
        return "integration_or_client"
    assert permissions == {AllowAny}, f"/{route}: unknown permission classes {permissions}: classify them here"
    return "public"


def all_routes() -> list[Route]:
    routes = []
    for route, pattern in _walk(get_resolver().url_patterns, ""):
        audience = _audience(route, pattern)
        view_class = getattr(pattern.callback, "view_class", None)
        if audience in ("admin", "page") or view_class is None:
            routes.append(Route(route, "get", audience))
            continue
        routes.extend(Route(route, method, audience) for method in METHODS if hasattr(view_class, method))
    return routes


def fill(route: str, ids: dict[str, str]) -> str:
    """The URL of `route` with each path parameter taken from `ids` (every parameter must be named there)."""
    url = "/" + route
    for part in route.split("<")[1:]:
        converter, name = part.split(">")[0].split(":") if ":" in part.split(">")[0] else ("str", part.split(">")[0])
        assert name in ids, f"/{route}: give <{name}> a value in the matrix's ids"
        token = f"<{converter}:{name}>" if f"<{converter}:{name}>" in url else f"<{name}>"
        url = url.replace(token, ids[name])
    return url
