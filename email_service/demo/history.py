"""A believable month of outreach for the demo client, recorded through `record_event`.

The demo's dashboard would otherwise open on zeros. This writes sent emails and what their
recipients did (human and machine opens, clicks, replies, auto-replies, bounces, unsubscribes)
the way sending and tracking would, so the rollups, the API and the dashboard all agree with
`verify_rollups`. The history's emails name no mailbox: nothing here can be picked up by the
dispatcher or sent for real.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from email_service.events.recording import record_event
from email_service.models import Campaign, Client, EmailEvent, EmailSendQueue, Lead

Type = EmailEvent.Type

_FIRST_NAMES = ["Ada", "Ben", "Chloé", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kara", "Luis"]
_COMPANIES = ["northwind", "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne", "tyrell"]
_REPLIES = [
    (
        "Re: Quick question about your outbound",
        "Thanks for reaching out — we are looking at this for Q3. Can you send pricing?",
    ),
    ("Re: Idea for {company}", "Interesting timing. Do you have 20 minutes on Thursday afternoon?"),
    ("Re: Quick question about your outbound", "Not a priority right now, but feel free to check back in two months."),
    ("Re: Idea for {company}", "Please talk to our head of growth, I have copied her here."),
    ("Re: Following up", "We already use a tool for this, but I'd be open to a comparison."),
]
_AUTO_REPLIES = [("Out of office", "I am out of the office until Monday with limited access to email.")]


@dataclass(frozen=True)
class _Step:
    number: int
    subject: str
    delay_days: int


_STEPS = [
    _Step(1, "Quick question about your outbound", 0),
    _Step(2, "Following up", 3),
    _Step(3, "Last note from me", 7),
]


def seed_demo_history(*, client: Client, days: int = 35, seed: int = 7, now: datetime | None = None) -> int:
    """Record `days` of a three-step campaign for `client`; returns how many emails it sent."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    now = now or timezone.now()
    with transaction.atomic():
        campaigns = [
            Campaign.objects.create(client=client, name="Founders — Series A, EU"),
            Campaign.objects.create(client=client, name="Agency owners — UK"),
        ]
        sent = 0
        for day in range(days, -1, -1):
            start = now - timedelta(days=day)
            if start.weekday() >= 5:
                continue
            for campaign_index, campaign in enumerate(campaigns):
                volume = rng.randint(7, 13) if campaign_index == 0 else rng.randint(3, 6)
                volume = int(volume * (1 + (days - day) / days))  # the outreach grows over the month
                for _ in range(volume):
                    sent += _lead_sequence(client=client, campaign=campaign, first_send=start, now=now, rng=rng)
    return sent


def _lead_sequence(
    *, client: Client, campaign: Campaign, first_send: datetime, now: datetime, rng: random.Random
) -> int:
    name = rng.choice(_FIRST_NAMES)
    company = rng.choice(_COMPANIES)
    lead = Lead.objects.create(
        id=uuid.uuid4(),
        client=client,
        email=f"{name.lower().replace('é', 'e')}.{uuid.uuid4().hex[:6]}@{company}.example",
        first_name=name,
        company=company.title(),
    )
    sent = 0
    for step in _STEPS:
        sent_at = first_send.replace(hour=9, minute=0) + timedelta(days=step.delay_days, minutes=rng.randint(0, 420))
        if sent_at >= now:
            break
        message = EmailSendQueue.objects.create(
            client=client,
            campaign=campaign,
            lead=lead,
            sequence_number=step.number,
            recipient_email=lead.email,
            subject=step.subject,
            body_html=f"<p>Hi {name},</p>",
            status=EmailSendQueue.Status.SENT,
            sent_at=sent_at,
        )
        record_event(message=message, event_type=Type.SENT, occurred_at=sent_at, tz_name=client.timezone)
        sent += 1
        if _recipient_acts(message=message, company=company, now=now, rng=rng):
            break  # the lead answered, bounced or left: the sequence stops
    return sent


def _recipient_acts(*, message: EmailSendQueue, company: str, now: datetime, rng: random.Random) -> bool:
    """Record what the recipient of `message` did; True when the sequence stops there."""
    sent_at = message.sent_at
    assert sent_at is not None
    tz = message.client.timezone

    def at(hours: float) -> datetime | None:
        moment = sent_at + timedelta(hours=hours)
        return moment if moment < now else None

    def record(event_type: str, moment: datetime | None, **extra: Any) -> None:
        if moment is not None:
            record_event(message=message, event_type=event_type, occurred_at=moment, tz_name=tz, **extra)

    if rng.random() < 0.025:
        record(
            Type.BOUNCE,
            at(0.05),
            detail={"subject": "Delivery Status Notification (Failure)", "snippet": "Address not found."},
        )
        return True
    if rng.random() < 0.14:  # a mail-privacy proxy or scanner fetches the pixel within seconds
        record(Type.OPEN, at(0.001), is_machine=True, machine_reason="prefetch")
    if rng.random() < 0.05:
        record(Type.CLICK, at(0.002), is_machine=True, machine_reason="link_scanner")
    if rng.random() < 0.52:
        record(Type.OPEN, at(rng.uniform(0.3, 40)))
        if rng.random() < 0.2:
            record(Type.CLICK, at(rng.uniform(41, 60)))
        if rng.random() < 0.14:
            subject, snippet = rng.choice(_REPLIES)
            moment = at(rng.uniform(61, 90))
            record(
                Type.REPLY,
                moment,
                detail={
                    "subject": subject.format(company=company.title()),
                    "snippet": snippet,
                    "from_email": message.recipient_email,
                },
            )
            return moment is not None
    if rng.random() < 0.02:
        subject, snippet = rng.choice(_AUTO_REPLIES)
        record(Type.AUTO_REPLY, at(0.1), detail={"subject": subject, "snippet": snippet})
    if rng.random() < 0.01:
        record(Type.UNSUBSCRIBE, at(rng.uniform(1, 30)))
        return True
    return False
