"""Routes n8n calls with the integration API key: queue emails, read a lead's emails."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.api.adapters import json_body, parse, parse_body
from email_service.api.auth import BearerAuthentication, IsIntegration
from email_service.api.errors import error_body
from email_service.api.serializers import EmailStatusResponseSerializer, EmailStatusSerializer
from email_service.exceptions import InvalidInput, OreeError
from email_service.sending.enqueue import (
    MAX_BATCH_ITEMS,
    MAX_BODY_BYTES,
    EnqueueResult,
    SendRequest,
    emails_for_lead,
    enqueue_batch,
    enqueue_email,
)


class EmailStatusQuerySerializer(serializers.Serializer[dict[str, uuid.UUID]]):
    client_id = serializers.UUIDField(required=False)


class SendEmailSerializer(serializers.Serializer[dict[str, Any]]):
    lead_id = serializers.UUIDField(help_text="n8n's id of the lead; the lead is created on first sight.")
    client_id = serializers.UUIDField()
    recipient_email = serializers.EmailField(max_length=254)
    email_subject = serializers.CharField(
        max_length=998,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Empty or equal to the first step's subject: a follow-up continues that thread as 'Re: …'.",
    )
    email_body = serializers.CharField(
        trim_whitespace=False, help_text=f"HTML, at most {MAX_BODY_BYTES // 1024} KB (UTF-8); larger answers 413."
    )
    sequence_number = serializers.IntegerField(min_value=1, max_value=1000)
    campaign_id = serializers.UUIDField(required=False, allow_null=True, help_text="Default: the client's default.")
    send_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Not before (ISO 8601).")
    lead_first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    lead_last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    lead_company = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def validate_email_body(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value

    def to_request(self) -> SendRequest:
        data = self.validated_data
        return SendRequest(
            client_id=data["client_id"],
            lead_id=data["lead_id"],
            recipient_email=data["recipient_email"],
            subject=data["email_subject"],
            body_html=data["email_body"],
            sequence_number=data["sequence_number"],
            campaign_id=data.get("campaign_id"),
            send_at=data.get("send_at"),
            personalization={
                key: data[f"lead_{key}"] for key in ("first_name", "last_name", "company") if data.get(f"lead_{key}")
            },
        )


class QueuedEmailSerializer(serializers.Serializer[dict[str, Any]]):
    queue_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["queued", "sending", "sent", "failed", "cancelled", "paused", "held"])
    status_reason = serializers.CharField()
    mailbox_email = serializers.EmailField(allow_null=True)
    scheduled_for = serializers.DateTimeField()
    sequence_number = serializers.IntegerField()
    created = serializers.BooleanField(help_text="False when the same step was queued before (nothing new queued).")


class SendBatchSerializer(serializers.Serializer[dict[str, Any]]):
    emails = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchItemSerializer(serializers.Serializer[dict[str, Any]]):
    index = serializers.IntegerField()
    status = serializers.IntegerField(help_text="202 queued, 200 already queued, or the 4xx this item alone got.")
    queue_id = serializers.UUIDField(allow_null=True)
    email_status = serializers.CharField(allow_null=True)
    mailbox_email = serializers.EmailField(allow_null=True)
    scheduled_for = serializers.DateTimeField(allow_null=True)
    detail = serializers.CharField(required=False)
    code = serializers.CharField(required=False)


class SendBatchResponseSerializer(serializers.Serializer[dict[str, Any]]):
    results = BatchItemSerializer(many=True)
    queued = serializers.IntegerField()
    existing = serializers.IntegerField()
    rejected = serializers.IntegerField()


class SendErrorSerializer(serializers.Serializer[dict[str, Any]]):
    detail = serializers.CharField()
    code = serializers.CharField()


def queued_email(result: EnqueueResult) -> dict[str, Any]:
    email = result.email
    return {
        "queue_id": str(email.pk),
        "status": email.status,
        "status_reason": email.status_reason,
        "mailbox_email": email.mailbox.email if email.mailbox else None,
        "scheduled_for": email.next_attempt_at.isoformat(),
        "sequence_number": email.sequence_number,
        "created": result.created,
    }


class SendEmailView(APIView):
    """Queue one email (202), or answer the row already queued for the same step (200)."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegration]

    @extend_schema(
        operation_id="email_send",
        request=SendEmailSerializer,
        responses={
            202: QueuedEmailSerializer,
            200: QueuedEmailSerializer,
            400: SendErrorSerializer,
            404: SendErrorSerializer,
            409: SendErrorSerializer,
            413: SendErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        result = enqueue_email(request=parse(SendEmailSerializer, json_body(request)).to_request())
        return Response(queued_email(result), status=202 if result.created else 200)


def _parse_item(item: Any) -> SendRequest | OreeError:
    incoming = SendEmailSerializer(data=item)
    if incoming.is_valid():
        return incoming.to_request()
    body = error_body(incoming.errors)
    return InvalidInput(str(body["detail"]), code=str(body["code"]), field=body.get("field"))


class SendEmailBatchView(APIView):
    """Queue up to 500 emails; each item succeeds or fails on its own, results in order."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegration]

    @extend_schema(
        operation_id="email_send_batch",
        request=SendBatchSerializer,
        responses={200: SendBatchResponseSerializer, 400: SendErrorSerializer, 413: SendErrorSerializer},
        description="Each item has the fields of POST /api/email/send.",
    )
    def post(self, request: Request) -> Response:
        emails = parse_body(request, SendBatchSerializer)["emails"]
        outcomes = enqueue_batch(requests=[_parse_item(item) for item in emails])
        results = [_batch_item(index, outcome) for index, outcome in enumerate(outcomes)]
        counts = {"queued": 0, "existing": 0, "rejected": 0}
        for item in results:
            counts["queued" if item["status"] == 202 else "existing" if item["status"] == 200 else "rejected"] += 1
        return Response({"results": results, **counts}, status=200)


def _batch_item(index: int, outcome: EnqueueResult | OreeError) -> dict[str, Any]:
    if isinstance(outcome, OreeError):
        item: dict[str, Any] = {
            "index": index,
            "status": outcome.status_code,
            "queue_id": None,
            "email_status": None,
            "mailbox_email": None,
            "scheduled_for": None,
            "detail": outcome.detail,
            "code": outcome.code,
        }
        if outcome.field:
            item["field"] = outcome.field
        return item
    body = queued_email(outcome)
    return {
        "index": index,
        "status": 202 if outcome.created else 200,
        "queue_id": body["queue_id"],
        "email_status": body["status"],
        "mailbox_email": body["mailbox_email"],
        "scheduled_for": body["scheduled_for"],
    }


class EmailStatusView(APIView):
    """A lead's emails: status, mailbox, Gmail ids, opens, clicks, replied."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsIntegration]

    @extend_schema(
        operation_id="email_status",
        parameters=[OpenApiParameter("client_id", uuid.UUID, description="Only this client's lead.")],
        responses={200: EmailStatusResponseSerializer, 404: OpenApiResponse(SendErrorSerializer)},
    )
    def get(self, request: Request, lead_id: uuid.UUID) -> Response:
        query = EmailStatusQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        emails = emails_for_lead(lead_id=lead_id, client_id=query.validated_data.get("client_id"))
        return Response({"lead_id": str(lead_id), "emails": EmailStatusSerializer(emails, many=True).data})
