"""Mailbox state changes made by operators and by Google's answers."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from email_service.models import EmailSendQueue, Mailbox

Status = Mailbox.Status


def pause_mailbox(*, mailbox: Mailbox, reason: str = "paused by an operator") -> bool:
    """Stop claiming for this mailbox; a send in flight finishes. False unless it was active or limited."""
    changed = Mailbox.objects.filter(pk=mailbox.pk, status__in=[Status.ACTIVE, Status.LIMITED]).update(
        status=Status.PAUSED, status_reason=reason, updated_at=timezone.now()
    )
    return changed == 1


def resume_mailbox(*, mailbox: Mailbox) -> bool:
    """Claim for this mailbox again. False unless it was paused."""
    changed = Mailbox.objects.filter(pk=mailbox.pk, status=Status.PAUSED).update(
        status=Status.ACTIVE, status_reason="", updated_at=timezone.now()
    )
    return changed == 1


def disconnect_mailbox(*, mailbox: Mailbox, reason: str) -> int:
    """Mark the mailbox disconnected and hold its unsent emails (never fail or lose them).

    Returns how many queued emails were held. Revoking the token at Google is the caller's
    first step when the disconnection is asked for (not when Google already refused us).
    """
    now = timezone.now()
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(
            status=Status.DISCONNECTED,
            status_reason=reason,
            disconnected_at=now,
            last_error=reason,
            last_error_at=now,
            updated_at=now,
        )
        mailbox.status, mailbox.status_reason, mailbox.disconnected_at = Status.DISCONNECTED, reason, now
        return EmailSendQueue.objects.filter(mailbox=mailbox, status=EmailSendQueue.Status.QUEUED).update(
            status=EmailSendQueue.Status.HELD, status_reason="mailbox_disconnected", updated_at=now
        )
