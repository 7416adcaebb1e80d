"""Per-client suppression: addresses a client must never email again."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from email_service.events.recording import record_event
from email_service.models import EmailSendQueue, Lead, Suppression


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


# ---------------------------------------------------------------------------------------------
# Stop rules: what a reply, an auto-reply, a bounce or an unsubscribe does to the sequence
# ---------------------------------------------------------------------------------------------

LEAD_REPLIED = "lead_replied"
LEAD_BOUNCED = "lead_bounced"
LEAD_UNSUBSCRIBED = "lead_unsubscribed"
LEAD_AUTO_REPLIED = "lead_auto_replied"


def _unsent_for(message: EmailSendQueue, *, same_address: bool) -> QuerySet[EmailSendQueue]:
    """The lead's emails that have not left yet (and, for a suppressed address, the client's others to it)."""
    match = Q(lead_id=message.lead_id)
    if same_address:
        match |= Q(recipient_email__iexact=message.recipient_email)
    return EmailSendQueue.objects.filter(match, client_id=message.client_id, status__in=EmailSendQueue.UNSENT_STATUSES)


def _set_lead_status(message: EmailSendQueue, status: str, *, now: datetime) -> None:
    # Unsubscribed and bounced are final; replied does not overwrite them.
    final = (Lead.Status.UNSUBSCRIBED, Lead.Status.BOUNCED)
    leads = Lead.objects.filter(pk=message.lead_id)
    if status == Lead.Status.REPLIED:
        leads = leads.exclude(status__in=final)
    leads.exclude(status=status).update(status=status, status_changed_at=now)


def _cancel(rows: QuerySet[EmailSendQueue], *, reason: str, now: datetime) -> int:
    # A conditional update: a row the dispatcher claimed meanwhile is `sending` and not touched;
    # the suppression check just before the send stops it.
    return rows.update(status=EmailSendQueue.Status.CANCELLED, status_reason=reason, updated_at=now)


@transaction.atomic
def stop_after_reply(*, message: EmailSendQueue) -> int:
    """A person answered: the lead is `replied` and its unsent follow-ups are cancelled. Returns rows cancelled."""
    now = timezone.now()
    _set_lead_status(message, Lead.Status.REPLIED, now=now)
    return _cancel(_unsent_for(message, same_address=False), reason=LEAD_REPLIED, now=now)


@transaction.atomic
def stop_after_bounce(*, message: EmailSendQueue) -> int:
    """A hard bounce: the lead is `bounced`, the address suppressed for this client, the rest cancelled."""
    now = timezone.now()
    _set_lead_status(message, Lead.Status.BOUNCED, now=now)
    suppress(
        client_id=message.client_id,
        email=message.recipient_email,
        reason=Suppression.Reason.BOUNCED,
        source_message=message,
    )
    return _cancel(_unsent_for(message, same_address=True), reason=LEAD_BOUNCED, now=now)


@transaction.atomic
def stop_after_unsubscribe(*, message: EmailSendQueue) -> int:
    """An unsubscribe: the lead is `unsubscribed`, the address suppressed for this client, the rest cancelled."""
    now = timezone.now()
    _set_lead_status(message, Lead.Status.UNSUBSCRIBED, now=now)
    suppress(
        client_id=message.client_id,
        email=message.recipient_email,
        reason=Suppression.Reason.UNSUBSCRIBED,
        source_message=message,
    )
    return _cancel(_unsent_for(message, same_address=True), reason=LEAD_UNSUBSCRIBED, now=now)


@transaction.atomic
def stop_after_auto_reply(*, message: EmailSendQueue) -> int:
    """An out-of-office: the sequence goes on, unless the client pauses on auto-replies. Returns rows paused."""
    if not message.client.pause_on_auto_reply:
        return 0
    now = timezone.now()
    return (
        _unsent_for(message, same_address=False)
        .filter(status=EmailSendQueue.Status.QUEUED)
        .update(status=EmailSendQueue.Status.PAUSED, status_reason=LEAD_AUTO_REPLIED, updated_at=now)
    )


def message_for_unsubscribe_token(token: str) -> EmailSendQueue | None:
    """The message an unsubscribe link belongs to; None for anything that is not one of our tokens."""
    if not token or len(token) > 64:
        return None
    return EmailSendQueue.objects.filter(unsubscribe_token=token).select_related("client").first()


def unsubscribe(*, message: EmailSendQueue, source: str) -> bool:
    """Unsubscribe the recipient of `message` (RFC 8058 one-click or the page's button); idempotent.

    Returns True the first time. The event is recorded once per message (`dedupe_key`), and the
    stop rule runs every time: it is idempotent and a retry after a crash must complete it.
    """
    with transaction.atomic():
        event = record_event(
            message=message,
            event_type="unsubscribe",
            dedupe_key=f"unsubscribe:{message.pk}",
            detail={"source": source},
        )
        stop_after_unsubscribe(message=message)
    return event is not None
