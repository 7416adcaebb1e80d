"""Request and response shapes shared by the API views."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from email_service.models import EmailSendQueue


class EmailStatusSerializer(serializers.ModelSerializer[EmailSendQueue]):
    queue_id = serializers.UUIDField(source="id", read_only=True)
    mailbox_email = serializers.SerializerMethodField()
    opens = serializers.IntegerField(source="open_count", read_only=True)
    clicks = serializers.IntegerField(source="click_count", read_only=True)
    replied = serializers.SerializerMethodField()

    class Meta:
        model = EmailSendQueue
        fields = [
            "queue_id",
            "client_id",
            "campaign_id",
            "sequence_number",
            "status",
            "status_reason",
            "mailbox_email",
            "scheduled_for",
            "sent_at",
            "gmail_message_id",
            "gmail_thread_id",
            "opens",
            "clicks",
            "replied",
            "last_error",
        ]
        read_only_fields = fields

    scheduled_for = serializers.DateTimeField(source="next_attempt_at", read_only=True)
    client_id = serializers.UUIDField(read_only=True)
    campaign_id = serializers.UUIDField(read_only=True)

    def get_mailbox_email(self, obj: EmailSendQueue) -> str | None:
        return obj.mailbox.email if obj.mailbox else None

    def get_replied(self, obj: EmailSendQueue) -> bool:
        return obj.replied_at is not None


class EmailStatusResponseSerializer(serializers.Serializer[dict[str, Any]]):
    lead_id = serializers.UUIDField()
    emails = EmailStatusSerializer(many=True)
