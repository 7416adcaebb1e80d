"""Per-client suppression: addresses a client must never email again."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from email_service.models import EmailSendQueue, Suppression


def is_suppressed(*, client_id: uuid.UUID, email: str) -> bool:
    """True when the client may not email this address (checked at enqueue and just before the send)."""
    return Suppression.objects.filter(client_id=client_id, email=email.strip().lower()).exists()


def suppress(*, client_id: uuid.UUID, email: str, reason: str, source_message: EmailSendQueue | None = None) -> bool:
    """Add the address to the client's suppression list; False when it was already there."""
    try:
        with transaction.atomic():
            Suppression.objects.create(
                client_id=client_id, email=email.strip().lower(), reason=reason, source_message=source_message
            )
    except IntegrityError:
        return False
    return True
