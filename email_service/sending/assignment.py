"""Sticky mailboxes (DESIGN.md decision 5): one mailbox per lead, chosen by remaining capacity.

A lead's first email picks the client's usable mailbox with the most capacity left today,
counting what is already queued for it (so a batch of new leads spreads over the mailboxes
instead of piling onto the emptiest one); ties go to the least recently used, never-used first.
The choice is kept in `LeadMailboxAssignment` (one row per lead, updated in place) and every
later step uses it. When that mailbox is paused or disconnected, a lead with nothing sent yet
moves to another mailbox; a lead mid-sequence waits, since its thread must continue from the
same address.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from email_service.models import Client, EmailSendQueue, Lead, LeadMailboxAssignment, Mailbox
from email_service.sending.pacing import remaining_today

Status = EmailSendQueue.Status
# A limited mailbox is connected and sends again on the client's next local day.
SENDING_MAILBOX_STATUSES = (Mailbox.Status.ACTIVE, Mailbox.Status.LIMITED)

HOLD_NO_MAILBOX = "no_usable_mailbox"
HOLD_WAITING_FOR_MAILBOX = "waiting_for_mailbox"


@dataclass(frozen=True)
class MailboxChoice:
    """The mailbox a lead's email goes through, and why it must wait when `hold_reason` is set."""

    mailbox: Mailbox | None
    hold_reason: str = ""


def lead_has_started(*, lead_id: uuid.UUID | str) -> bool:
    """True once any email to the lead has left (or may have): its thread is bound to its mailbox."""
    return EmailSendQueue.objects.filter(lead_id=lead_id, status__in=[Status.SENT, Status.SENDING]).exists()


def pick_mailbox(*, client: Client, exclude: Mailbox | None = None, now: datetime | None = None) -> Mailbox | None:
    """The client's usable mailbox with the most capacity left today; ties: least recently used."""
    now = now or timezone.now()
    candidates = list(
        Mailbox.objects.filter(client=client, status__in=SENDING_MAILBOX_STATUSES)
        .exclude(pk__in=[exclude.pk] if exclude else [])
        .annotate(pending=Count("emails", filter=Q(emails__status__in=[Status.QUEUED, Status.SENDING])))
    )
    if not candidates:
        return None

    def rank(mailbox: Mailbox) -> tuple[bool, int, float, str]:
        left = remaining_today(mailbox=mailbox, client=client, now=now) - mailbox.pending  # type: ignore[attr-defined]
        last = mailbox.last_sent_at.timestamp() if mailbox.last_sent_at else 0.0
        return (mailbox.status != Mailbox.Status.ACTIVE, -left, last, str(mailbox.pk))

    return min(candidates, key=rank)


def pick_mailboxes(*, client: Client, count: int, now: datetime | None = None) -> list[Mailbox | None]:
    """`pick_mailbox` for `count` new leads at once: each takes the mailbox with the most capacity
    left, counting the ones handed out before it (one query for the whole batch)."""
    now = now or timezone.now()
    candidates = list(
        Mailbox.objects.filter(client=client, status__in=SENDING_MAILBOX_STATUSES).annotate(
            pending=Count("emails", filter=Q(emails__status__in=[Status.QUEUED, Status.SENDING]))
        )
    )
    if not candidates:
        return [None] * count
    left = {m.pk: remaining_today(mailbox=m, client=client, now=now) - m.pending for m in candidates}

    def rank(mailbox: Mailbox) -> tuple[bool, int, float, str]:
        last = mailbox.last_sent_at.timestamp() if mailbox.last_sent_at else 0.0
        return (mailbox.status != Mailbox.Status.ACTIVE, -left[mailbox.pk], last, str(mailbox.pk))

    picks: list[Mailbox | None] = []
    for _ in range(count):
        chosen = min(candidates, key=rank)
        left[chosen.pk] -= 1
        picks.append(chosen)
    return picks


def mailbox_for_lead(*, lead: Lead, client: Client, now: datetime | None = None) -> MailboxChoice:
    """The lead's sticky mailbox, assigning or moving it as the rules above say."""
    current = LeadMailboxAssignment.objects.select_related("mailbox").filter(lead=lead).first()
    if current is not None:
        if current.mailbox.status in SENDING_MAILBOX_STATUSES:
            return MailboxChoice(current.mailbox)
        if lead_has_started(lead_id=lead.pk):
            return MailboxChoice(current.mailbox, HOLD_WAITING_FOR_MAILBOX)
    chosen = pick_mailbox(client=client, exclude=current.mailbox if current else None, now=now)
    if chosen is None:
        return MailboxChoice(current.mailbox if current else None, HOLD_NO_MAILBOX)
    if current is not None:
        move_lead(lead_id=lead.pk, to=chosen)
        return MailboxChoice(chosen)
    try:
        with transaction.atomic():
            LeadMailboxAssignment.objects.create(lead=lead, client=client, mailbox=chosen)
    except IntegrityError:
        # Race condition: a concurrent request assigned this lead first; its choice stands.
        return mailbox_for_lead(lead=lead, client=client, now=now)
    return MailboxChoice(chosen)


def move_lead(*, lead_id: uuid.UUID | str, to: Mailbox) -> int:
    """Point the lead's assignment (in place) and its unsent emails at another mailbox; returns emails moved."""
    now = timezone.now()
    LeadMailboxAssignment.objects.filter(lead_id=lead_id).update(mailbox=to, updated_at=now)
    return (
        EmailSendQueue.objects.filter(lead_id=lead_id, status__in=[Status.QUEUED, Status.HELD])
        .exclude(mailbox=to)
        .update(mailbox=to, updated_at=now)
    )
