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
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from email_service.events.recording import record_event, record_queued_events
from email_service.exceptions import Conflict, NotFound, OreeError, PayloadTooLarge
from email_service.inbound.suppression import is_suppressed
from email_service.models import Campaign, Client, EmailEvent, EmailSendQueue, Lead, LeadMailboxAssignment, Suppression
from email_service.sending.assignment import (
    HOLD_NO_MAILBOX,
    SENDING_MAILBOX_STATUSES,
    MailboxChoice,
    mailbox_for_lead,
    pick_mailboxes,
)
from email_service.sending.windows import scheduled_for

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


def _new_row(
    *, request: SendRequest, client: Client, campaign: Campaign, lead: Lead, choice: MailboxChoice, now: datetime
) -> EmailSendQueue:
    """The queue row for a request (not saved): its mailbox, due time, and queued, paused or held."""
    due = scheduled_for(client=client, not_before=max(now, request.send_at or now))
    status, reason = Status.QUEUED, ""
    if campaign.status == Campaign.Status.PAUSED:
        status, reason = Status.PAUSED, "campaign_paused"
    elif choice.hold_reason:
        status, reason = Status.HELD, choice.hold_reason
    elif due is None:
        status, reason = Status.HELD, HOLD_NO_SEND_WINDOW
    return EmailSendQueue(
        id=uuid.uuid4(),
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
        created_at=now,
        updated_at=now,
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
        email = _new_row(request=request, client=client, campaign=campaign, lead=lead, choice=choice, now=now)
        status = email.status
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


def enqueue_batch(
    *, requests: Sequence[SendRequest | OreeError], now: datetime | None = None
) -> list[EnqueueResult | OreeError]:
    """Queue a batch set-wise: each item all-or-nothing, errors returned in place, never per batch.

    The same rules as `enqueue_email`, in a fixed number of statements whatever the batch size:
    clients, campaigns, existing rows, leads, suppressions and assignments are read with one
    query each; new leads, new assignments, rows and their `queued` events are inserted in bulk
    with ON CONFLICT DO NOTHING, and whatever a concurrent request inserted first is read back and
    answered as existing (idempotency holds under races, as in the single path). One nudge after
    commit. A lead whose sticky mailbox stopped sending takes the single path's rules item by item.
    """
    now = now or timezone.now()
    results: list[EnqueueResult | OreeError | None] = [
        item if isinstance(item, OreeError) else None for item in requests
    ]
    todo: dict[int, SendRequest] = {}
    for index, item in enumerate(requests):
        if isinstance(item, SendRequest):
            try:
                check_body_size(item.body_html)
            except OreeError as error:
                results[index] = error
                continue
            todo[index] = item
    if not todo:
        return [r for r in results if r is not None]

    def reject(index: int, error: OreeError) -> None:
        results[index] = error
        todo.pop(index, None)

    with transaction.atomic():
        clients = Client.objects.in_bulk({r.client_id for r in todo.values()})
        for index, req in list(todo.items()):
            try:
                client = clients.get(req.client_id)
                if client is None:
                    raise NotFound("No client with that id.", code="client_not_found", field="client_id")
                if not client.is_active:
                    raise Conflict(
                        "This client is disabled and sends nothing.", code="client_inactive", field="client_id"
                    )
            except OreeError as error:
                reject(index, error)
        campaigns = Campaign.objects.in_bulk({r.campaign_id for r in todo.values() if r.campaign_id})
        defaults = {
            cid: _campaign(clients[cid], None) for cid in {r.client_id for r in todo.values() if not r.campaign_id}
        }
        campaign_of: dict[int, Campaign] = {}
        for index, req in list(todo.items()):
            found = campaigns.get(req.campaign_id) if req.campaign_id else defaults[req.client_id]
            if found is None or found.client_id != req.client_id:  # unknown, or another client's
                reject(
                    index,
                    NotFound(
                        "No campaign with that id for this client.", code="campaign_not_found", field="campaign_id"
                    ),
                )
            else:
                campaign_of[index] = found

        def key(index: int) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, int]:
            req = todo[index]
            return (req.client_id, req.lead_id, campaign_of[index].pk, req.sequence_number)

        existing = _existing_rows({key(i) for i in todo})
        first_of: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID, int], int] = {}
        repeats: dict[int, int] = {}  # the same email twice in one batch: the later one answers the first
        for index in list(todo):
            k = key(index)
            if k in existing:
                results[index] = EnqueueResult(existing[k], created=False)
                del todo[index]
            elif k in first_of:
                repeats[index] = first_of[k]
                del todo[index]
            else:
                first_of[k] = index

        leads = _bulk_leads(todo, clients, reject)
        suppressed = set(
            Suppression.objects.filter(
                client_id__in={r.client_id for r in todo.values()},
                email__in={leads[r.lead_id].email for r in todo.values()},
            ).values_list("client_id", "email")
        )
        for index, req in list(todo.items()):
            lead = leads[req.lead_id]
            try:
                if lead.status != Lead.Status.ACTIVE or (req.client_id, lead.email) in suppressed:
                    check_not_suppressed(client_id=req.client_id, lead=lead, email=lead.email)
                    raise Conflict("This address is on the client's suppression list.", code="recipient_suppressed")
            except OreeError as error:
                reject(index, error)

        mailbox_of = _bulk_assign(
            {req.lead_id: (leads[req.lead_id], clients[req.client_id]) for req in todo.values()}, now
        )
        rows: dict[int, EmailSendQueue] = {}
        for index, req in todo.items():
            rows[index] = _new_row(
                request=req,
                client=clients[req.client_id],
                campaign=campaign_of[index],
                lead=leads[req.lead_id],
                choice=mailbox_of[req.lead_id],
                now=now,
            )
        EmailSendQueue.objects.bulk_create(rows.values(), ignore_conflicts=True)
        inserted = set(EmailSendQueue.objects.filter(pk__in=[r.pk for r in rows.values()]).values_list("pk", flat=True))
        lost = {key(i) for i, r in rows.items() if r.pk not in inserted}
        raced = _existing_rows(lost) if lost else {}
        created: list[EmailSendQueue] = []
        for index, row in rows.items():
            if row.pk in inserted:
                results[index] = EnqueueResult(row, created=True)
                created.append(row)
            else:  # a concurrent request queued the same email first: its row stands
                results[index] = EnqueueResult(raced[key(index)], created=False)
        for index, first in sorted(repeats.items()):
            answer = results[first]
            if isinstance(answer, EnqueueResult):
                results[index] = EnqueueResult(answer.email, created=False)
                continue
            try:  # the first copy was refused: this one is judged on its own, as one by one would
                results[index] = enqueue_email(request=requests[index], now=now)  # type: ignore[arg-type]
            except OreeError as error:
                results[index] = error
        record_queued_events(messages=created, occurred_at=now)
        if any(row.status == Status.QUEUED for row in created):
            transaction.on_commit(_nudge)
    final = [r for r in results if r is not None]
    assert len(final) == len(requests)
    return final


def _existing_rows(
    keys: set[tuple[uuid.UUID, uuid.UUID, uuid.UUID, int]],
) -> dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID, int], EmailSendQueue]:
    """The rows already queued for these (client, lead, campaign, step) keys, in one query."""
    if not keys:
        return {}
    rows = EmailSendQueue.objects.select_related("mailbox").filter(lead_id__in={k[1] for k in keys})
    found = {(r.client_id, r.lead_id, r.campaign_id, r.sequence_number): r for r in rows}
    return {k: found[k] for k in keys if k in found}


def _bulk_leads(todo: dict[int, SendRequest], clients: dict[Any, Client], reject: Any) -> dict[uuid.UUID, Lead]:
    """Each item's lead, created on first sight (bulk, ON CONFLICT DO NOTHING); mismatches rejected."""
    wanted: dict[uuid.UUID, SendRequest] = {}
    for index in sorted(todo):  # the first item naming a new lead creates it, as one by one would
        wanted.setdefault(todo[index].lead_id, todo[index])
    leads = Lead.objects.in_bulk(wanted)
    missing = [req for lead_id, req in wanted.items() if lead_id not in leads]
    if missing:
        Lead.objects.bulk_create(
            [
                Lead(
                    id=req.lead_id,
                    client=clients[req.client_id],
                    email=req.recipient_email.strip().lower(),
                    **_names(req),
                )
                for req in missing
            ],
            ignore_conflicts=True,
        )
        leads.update(Lead.objects.in_bulk([req.lead_id for req in missing]))
    for index, req in list(todo.items()):
        lead = leads[req.lead_id]
        if lead.client_id != req.client_id:
            reject(
                index,
                Conflict("This lead_id belongs to another client.", code="lead_of_another_client", field="lead_id"),
            )
        elif lead.email.lower() != req.recipient_email.strip().lower():
            reject(
                index,
                Conflict(
                    "This lead_id was first sent to a different recipient_email.",
                    code="lead_email_mismatch",
                    field="lead_id",
                ),
            )
        else:
            names = _names(req)
            changed = [name for name, value in names.items() if getattr(lead, name) != value]
            if changed:
                for name in changed:
                    setattr(lead, name, names[name])
                lead.save(update_fields=changed)
    return leads


def _names(request: SendRequest) -> dict[str, str]:
    return {k: v for k, v in request.personalization.items() if k in ("first_name", "last_name", "company") and v}


def _bulk_assign(leads: dict[uuid.UUID, tuple[Lead, Client]], now: datetime) -> dict[uuid.UUID, MailboxChoice]:
    """Sticky mailboxes for many leads: kept ones read at once, new leads spread by capacity, in bulk."""
    current = {
        a.lead_id: a for a in LeadMailboxAssignment.objects.select_related("mailbox").filter(lead_id__in=list(leads))
    }
    choices: dict[uuid.UUID, MailboxChoice] = {}
    new: dict[Any, list[Lead]] = {}
    for lead_id, (lead, client) in leads.items():
        assignment = current.get(lead_id)
        if assignment is None:
            new.setdefault(client.pk, []).append(lead)
        elif assignment.mailbox.status in SENDING_MAILBOX_STATUSES:
            choices[lead_id] = MailboxChoice(assignment.mailbox)
        else:  # its mailbox stopped sending: the single path's move-or-wait rules
            choices[lead_id] = mailbox_for_lead(lead=lead, client=client, now=now)
    created: list[LeadMailboxAssignment] = []
    for client_id, new_leads in new.items():
        client = leads[new_leads[0].pk][1]
        picks = pick_mailboxes(client=client, count=len(new_leads), now=now)
        for lead, mailbox in zip(new_leads, picks, strict=True):
            if mailbox is None:
                choices[lead.pk] = MailboxChoice(None, HOLD_NO_MAILBOX)
            else:
                created.append(LeadMailboxAssignment(lead=lead, client_id=client_id, mailbox=mailbox, assigned_at=now))
    if created:
        LeadMailboxAssignment.objects.bulk_create(created, ignore_conflicts=True)
        # A concurrent request may have assigned some of these leads first: its choice stands.
        stored = dict(
            LeadMailboxAssignment.objects.filter(lead_id__in=[a.lead_id for a in created]).values_list(
                "lead_id", "mailbox_id"
            )
        )
        for assignment in created:
            if stored[assignment.lead_id] == assignment.mailbox.pk:
                choices[assignment.lead_id] = MailboxChoice(assignment.mailbox)
            else:
                lead, client = leads[assignment.lead_id]
                choices[assignment.lead_id] = mailbox_for_lead(lead=lead, client=client, now=now)
    return choices


def _existing(client_id: uuid.UUID, lead_id: uuid.UUID, campaign_id: uuid.UUID, step: int) -> EmailSendQueue | None:
    return (
        EmailSendQueue.objects.select_related("mailbox")
        .filter(client_id=client_id, lead_id=lead_id, campaign_id=campaign_id, sequence_number=step)
        .first()
    )


def _nudge() -> None:
    from email_service.sending.dispatch import nudge_dispatcher

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
