"""Known histories for the browser tests, recorded through `record_event` like sending and tracking do."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from email_service.events.recording import record_event
from email_service.models import EmailEvent, EmailSendQueue
from tests.factories import CampaignFactory, EmailSendQueueFactory, LeadFactory

Type = EmailEvent.Type


def sent_message(*, client, campaign, mailbox=None, step=1, days_ago=0, email=None):
    sent_at = timezone.now() - timedelta(days=days_ago, minutes=5)
    lead = LeadFactory(client=client, **({"email": email} if email else {}))
    message = EmailSendQueueFactory(
        client=client,
        campaign=campaign,
        lead=lead,
        mailbox=mailbox,
        sequence_number=step,
        status=EmailSendQueue.Status.SENT,
        sent_at=sent_at,
    )
    record_event(message=message, event_type=Type.SENT, occurred_at=sent_at)
    return message


def after(message, minutes):
    return message.sent_at + timedelta(minutes=minutes)


def outreach_history(client, *, scale=1):
    """Sends over 40 days (so all-time, 30 and 7 days differ) and what recipients did with them."""
    campaign = CampaignFactory(client=client, name="Spring outreach")
    messages = []
    for days_ago, step, count in [(40, 1, 3 * scale), (12, 1, 4 * scale), (3, 1, 5 * scale), (1, 2, 2 * scale)]:
        for _ in range(count):
            messages.append(sent_message(client=client, campaign=campaign, step=step, days_ago=days_ago))
    for index, message in enumerate(messages):
        if index % 2 == 0:
            record_event(message=message, event_type=Type.OPEN, occurred_at=after(message, 60))
        if index % 3 == 0:
            record_event(
                message=message,
                event_type=Type.OPEN,
                occurred_at=after(message, 0.01),
                is_machine=True,
                machine_reason="prefetch",
            )
        if index % 4 == 0:
            record_event(message=message, event_type=Type.CLICK, occurred_at=after(message, 90))
        if index % 5 == 1:
            record_event(
                message=message,
                event_type=Type.REPLY,
                occurred_at=after(message, 120),
                detail={"subject": "Re: hello", "snippet": "Sounds good", "from_email": message.recipient_email},
            )
        if index == 7:
            record_event(message=message, event_type=Type.BOUNCE, occurred_at=after(message, 1))
    return campaign, messages
