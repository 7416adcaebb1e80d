"""Operational routes: health."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.services.health import system_health


class HealthComponentSerializer(serializers.Serializer[dict[str, object]]):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class HealthView(APIView):
    """Database, Redis, broker, worker and beat: 200 when all are up, else 503."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health",
        responses={
            (code, "application/json"): inline_serializer(
                f"Health{code}",
                {
                    "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
                    "components": serializers.DictField(child=HealthComponentSerializer()),
                },
            )
            for code in (200, 503)
        },
    )
    def get(self, request: Request) -> Response:
        healthy, components = system_health()
        response = Response(
            {"status": "ok" if healthy else "unavailable", "components": components},
            status=200 if healthy else 503,
        )
        response["Cache-Control"] = "no-store"
        return response
