"""Routes n8n calls with the integration API key."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.api.auth import BearerAuthentication, IsIntegration
from email_service.api.serializers import EmailStatusResponseSerializer, EmailStatusSerializer
from email_service.services.sending import emails_for_lead


class EmailStatusQuerySerializer(serializers.Serializer[dict[str, uuid.UUID]]):
    client_id = serializers.UUIDField(required=False)


class EmailStatusView(APIView):
    """A lead's emails: status, mailbox, Gmail ids, opens, clicks, replied."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegration]

    @extend_schema(
        operation_id="email_status",
        parameters=[OpenApiParameter("client_id", uuid.UUID, description="Only this client's lead.")],
        responses={200: EmailStatusResponseSerializer},
    )
    def get(self, request: Request, lead_id: uuid.UUID) -> Response:
        query = EmailStatusQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        emails = emails_for_lead(lead_id=lead_id, client_id=query.validated_data.get("client_id"))
        return Response({"lead_id": str(lead_id), "emails": EmailStatusSerializer(emails, many=True).data})
