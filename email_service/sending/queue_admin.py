"""Operator actions on single queued emails: cancel an unsent one, retry a failed one."""

from __future__ import annotations

from django.utils import timezone

from email_service.models import EmailSendQueue

Status = EmailSendQueue.Status


def cancel_email(*, email: EmailSendQueue, reason: str = "cancelled_by_operator") -> bool:
    """Cancel an email that has not started sending; False when it already left or ended."""
    changed = EmailSendQueue.objects.filter(pk=email.pk, status__in=EmailSendQueue.UNSENT_STATUSES).update(
        status=Status.CANCELLED, status_reason=reason, updated_at=timezone.now()
    )
    return changed == 1


def retry_email(*, email: EmailSendQueue) -> bool:
    """Queue a failed email again with a fresh attempt count; False unless it had failed."""
    now = timezone.now()
    changed = EmailSendQueue.objects.filter(pk=email.pk, status=Status.FAILED).update(
        status=Status.QUEUED, status_reason="retried_by_operator", attempts=0, next_attempt_at=now, updated_at=now
    )
    return changed == 1
