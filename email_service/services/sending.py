"""The sending pipeline's services (enqueue, claim, send) and the queue's read side."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from email_service.exceptions import NotFound
from email_service.models import EmailSendQueue, Lead


def emails_for_lead(*, lead_id: uuid.UUID, client_id: uuid.UUID | None = None) -> QuerySet[EmailSendQueue]:
    """A lead's emails in sequence order; NotFound when the lead (of that client, if given) is unknown."""
    leads = Lead.objects.filter(pk=lead_id)
    if client_id is not None:
        leads = leads.filter(client_id=client_id)
    if not leads.exists():
        raise NotFound("No lead with that id.", code="lead_not_found")
    return (
        EmailSendQueue.objects.filter(lead_id=lead_id)
        .select_related("mailbox")
        .order_by("sequence_number", "created_at")
    )
