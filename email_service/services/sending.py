"""The send queue's front door (enqueue, one email or a batch) and its read side (a lead's emails).

Enqueueing is one transaction: the lead is created on first sight, suppression is checked, the
lead's sticky mailbox is chosen (services.assignment), the send window gives the row its
`next_attempt_at`, and the row is inserted. The unique (client, lead, campaign, step) constraint
makes a repeated request answer the existing row and never queue a second email. After commit the
dispatcher is nudged; a lost nudge loses nothing (the beat sweep finds due rows).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from email_service.exceptions import Conflict, NotFound, OreeError, PayloadTooLarge
from email_service.models import Campaign, Client, EmailEvent, EmailSendQueue, Lead
from email_service.services.assignment import mailbox_for_lead
from email_service.services.events import record_event
from email_service.services.suppression import is_suppressed
from email_service.services.windows import scheduled_for

Status = EmailSendQueue.Status

MAX_BODY_BYTES = 512 * 1024
"""Largest accepted HTML body (UTF-8 bytes). Gmail's own ceiling is 25 MB per message, but a cold
email over a few hundred KB is clipped by Gmail's reader ("[Message clipped]") and hurts delivery."""
MAX_BATCH_ITEMS = 500

HOLD_NO_SEND_WINDOW = "no_send_window"


@dataclass(frozen=True)
class SendRequest:
    """One email n8n asks us to send (CONTRACT.md `POST /api/email/send`)."""

    client_id: uuid.UUID
    lead_id: uuid.UUID
    recipient_email: str
    subject: str
    body_html: str
    sequence_number: int
    campaign_id: uuid.UUID | None = None
    send_at: datetime | None = None
    personalization: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnqueueResult:
    email: EmailSendQueue
    created: bool


def _client(client_id: uuid.UUID) -> Client:
    client = Client.objects.filter(pk=client_id).first()
    if client is None:
        raise NotFound("No client with that id.", code="client_not_found", field="client_id")
    if not client.is_active:
        raise Conflict("This client is disabled and sends nothing.", code="client_inactive", field="client_id")
    return client


def _campaign(client: Client, campaign_id: uuid.UUID | None) -> Campaign:
    if campaign_id is not None:
        campaign = Campaign.objects.filter(pk=campaign_id, client=client).first()
        if campaign is None:  # unknown, or another client's: never say which
            raise NotFound("No campaign with that id for this client.", code="campaign_not_found", field="campaign_id")
        return campaign
    campaign = Campaign.objects.filter(client=client, is_default=True).first()
    if campaign is None:
        try:
            with transaction.atomic():
                campaign = Campaign.objects.create(client=client, name="Default campaign", is_default=True)
        except IntegrityError:
            campaign = Campaign.objects.get(client=client, is_default=True)
    return campaign


def _lead(client: Client, request: SendRequest) -> Lead:
    email = request.recipient_email.strip().lower()
    names = {k: v for k, v in request.personalization.items() if k in ("first_name", "last_name", "company") and v}
    lead = Lead.objects.filter(pk=request.lead_id).first()
    if lead is None:
        try:
            with transaction.atomic():
                return Lead.objects.create(id=request.lead_id, client=client, email=email, **names)
        except IntegrityError:
            lead = Lead.objects.get(pk=request.lead_id)
    if lead.client_id != client.pk:
        raise Conflict("This lead_id belongs to another client.", code="lead_of_another_client", field="lead_id")
    if lead.email.lower() != email:
        # A sequence continues in one thread to one address: a changed address is a new lead.
        raise Conflict(
            "This lead_id was first sent to a different recipient_email.", code="lead_email_mismatch", field="lead_id"
        )
    changed = [name for name, value in names.items() if getattr(lead, name) != value]
    if changed:
        for name in changed:
            setattr(lead, name, names[name])
        lead.save(update_fields=changed)
    return lead


def check_not_suppressed(*, client_id: uuid.UUID, lead: Lead, email: str) -> None:
    """Raise when the client may not email this lead (unsubscribed, bounced, replied, or listed)."""
    if lead.status != Lead.Status.ACTIVE:
        raise Conflict(
            f"This lead is {lead.status}: the sequence stops.", code="recipient_suppressed", reason=lead.status
        )
    if is_suppressed(client_id=client_id, email=email):
        raise Conflict("This address is on the client's suppression list.", code="recipient_suppressed")


def check_body_size(body_html: str) -> None:
    if len(body_html.encode("utf-8")) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"email_body is larger than {MAX_BODY_BYTES // 1024} KB.", code="body_too_large", field="email_body"
        )


def enqueue_email(*, request: SendRequest, now: datetime | None = None) -> EnqueueResult:
    """Queue one email, or return the row already queued for the same (client, lead, campaign, step)."""
    now = now or timezone.now()
    check_body_size(request.body_html)
    with transaction.atomic():
        client = _client(request.client_id)
        campaign = _campaign(client, request.campaign_id)
        existing = _existing(client.pk, request.lead_id, campaign.pk, request.sequence_number)
        if existing is not None:
            return EnqueueResult(existing, created=False)
        lead = _lead(client, request)
        check_not_suppressed(client_id=client.pk, lead=lead, email=lead.email)
        choice = mailbox_for_lead(lead=lead, client=client, now=now)
        due = scheduled_for(client=client, not_before=max(now, request.send_at or now))
        status, reason = Status.QUEUED, ""
        if campaign.status == Campaign.Status.PAUSED:
            status, reason = Status.PAUSED, "campaign_paused"
        elif choice.hold_reason:
            status, reason = Status.HELD, choice.hold_reason
        elif due is None:
            status, reason = Status.HELD, HOLD_NO_SEND_WINDOW
        email = EmailSendQueue(
            client=client,
            campaign=campaign,
            lead=lead,
            mailbox=choice.mailbox,
            sequence_number=request.sequence_number,
            recipient_email=lead.email,
            subject=request.subject.strip(),
            body_html=request.body_html,
            personalization=dict(request.personalization),
            status=status,
            status_reason=reason,
            send_at=request.send_at,
            next_attempt_at=due or now,
        )
        try:
            with transaction.atomic():
                email.save(force_insert=True)
        except IntegrityError:
            # Race condition: the same request arrived twice at once; the first insert stands.
            existing = _existing(client.pk, request.lead_id, campaign.pk, request.sequence_number)
            assert existing is not None
            return EnqueueResult(existing, created=False)
        email.client, email.lead = client, lead
        record_event(message=email, event_type=EmailEvent.Type.QUEUED, occurred_at=now, tz_name=client.timezone)
        if status == Status.QUEUED:
            transaction.on_commit(_nudge)
    return EnqueueResult(email, created=True)


def enqueue_batch(*, requests: Sequence[SendRequest | OreeError]) -> list[EnqueueResult | OreeError]:
    """Queue each item on its own (all-or-nothing per item, not per batch); errors are returned in place."""
    results: list[EnqueueResult | OreeError] = []
    for item in requests:
        if isinstance(item, OreeError):
            results.append(item)
            continue
        try:
            results.append(enqueue_email(request=item))
        except OreeError as error:
            results.append(error)
    return results


def _existing(client_id: uuid.UUID, lead_id: uuid.UUID, campaign_id: uuid.UUID, step: int) -> EmailSendQueue | None:
    return (
        EmailSendQueue.objects.select_related("mailbox")
        .filter(client_id=client_id, lead_id=lead_id, campaign_id=campaign_id, sequence_number=step)
        .first()
    )


def _nudge() -> None:
    from email_service.services.dispatch import nudge_dispatcher

    nudge_dispatcher()


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
