"""Mailbox state changes made by operators and by Google's answers."""

from __future__ import annotations

from django.utils import timezone

from email_service.models import Mailbox

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
