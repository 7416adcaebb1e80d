"""Operational routes: health."""

from __future__ import annotations

from django.utils.log import log_response
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.operations.health import system_health


class HealthComponentSerializer(serializers.Serializer[dict[str, object]]):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


def _health_responses(name: str) -> dict[tuple[int, str], object]:
    return {
        (code, "application/json"): inline_serializer(
            f"{name}{code}",
            {
                "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
                "components": serializers.DictField(child=HealthComponentSerializer()),
            },
        )
        for code in (200, 503)
    }


class HealthView(APIView):
    """Database, Redis, broker, worker and beat: 200 when all are up, else 503."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    scope = "system"

    @extend_schema(operation_id="health", responses=_health_responses("Health"))
    def get(self, request: Request) -> Response:
        healthy, components = system_health(scope=self.scope)
        response = Response(
            {"status": "ok" if healthy else "unavailable", "components": components},
            status=200 if healthy else 503,
        )
        response["Cache-Control"] = "no-store"
        if not healthy:
            # 503 is this route's designed answer (a part is down, say while the stack starts), not a
            # fault of this request: a warning, where Django would log every 5xx as an ERROR.
            log_response("Unhealthy: %s", request.path, response=response, request=request, level="warning")
        return response


class WebHealthView(HealthView):
    """Whether this web process can serve (its database): the load balancer's check; every part is still reported."""

    scope = "web"

    @extend_schema(operation_id="health_web", responses=_health_responses("WebHealth"))
    def get(self, request: Request) -> Response:
        return super().get(request)
