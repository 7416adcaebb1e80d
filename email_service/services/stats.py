"""Dashboard selectors: every read a client's dashboard makes, scoped to that client.

Each function takes the client of the verified token and reads only that client's rows; an id of
another client's object is NotFound, never a 403 (DESIGN.md decision 9). Statistics come from the
rollups that `services.events.record_event` keeps (`StepDailyStats` by send day for counts and
rates, `ClientDailyActivity` by event day for the timeline), so each route reads a few hundred
rows at most, whatever the number of raw events. Days are the client's local calendar days.
"""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from email_service.exceptions import InvalidInput, NotFound
from email_service.models import (
    Campaign,
    Client,
    ClientDailyActivity,
    EmailEvent,
    Mailbox,
    StepDailyStats,
)

# Rollup column → name in the API; rates are computed from these.
STEP_METRICS: dict[str, str] = {
    "sent": "emails_sent",
    "opened": "opens",
    "clicked": "clicks",
    "replied": "replies",
    "bounced": "bounces",
    "unsubscribed": "unsubscribes",
    "machine_opened": "machine_opens",
    "machine_clicked": "machine_clicks",
}
RATES: dict[str, str] = {
    "open_rate": "opens",
    "click_rate": "clicks",
    "reply_rate": "replies",
    "bounce_rate": "bounces",
}
# The periods of /stats: None is all time, else that many client-local days ending today.
PERIODS: dict[str, int | None] = {"all_time": None, "last_7_days": 7, "last_30_days": 30}

REPLY_KINDS = (EmailEvent.Type.REPLY, EmailEvent.Type.AUTO_REPLY, EmailEvent.Type.BOUNCE)
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
MAX_TIMELINE_DAYS = 366
DEFAULT_TIMELINE_DAYS = 30


def client_zone(client: Client) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(client.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def client_today(*, client: Client, now: datetime | None = None) -> date:
    """Today's date on the client's wall clock."""
    return timezone.localtime(now or timezone.now(), client_zone(client)).date()


def rate(count: int, sent: int) -> float:
    """A percentage of the period's sent emails, two decimals; 0.0 when nothing was sent."""
    return round(100.0 * count / sent, 2) if sent else 0.0


def _metrics(sums: dict[str, Any], prefix: str = "") -> dict[str, int | float]:
    values: dict[str, int | float] = {api: int(sums.get(f"{prefix}{col}") or 0) for col, api in STEP_METRICS.items()}
    sent = int(values["emails_sent"])
    for name, count in RATES.items():
        values[name] = rate(int(values[count]), sent)
    return values


def client_stats(*, client: Client, now: datetime | None = None) -> dict[str, dict[str, int | float]]:
    """All-time, 7-day and 30-day counts and rates, by the day each message was sent: one query."""
    today = client_today(client=client, now=now)
    sums: dict[str, Any] = {}
    for period, days in PERIODS.items():
        period_filter = None if days is None else Q(date__gte=today - timedelta(days=days - 1), date__lte=today)
        for col in STEP_METRICS:
            sums[f"{period}__{col}"] = Sum(col, filter=period_filter)
    totals = StepDailyStats.objects.filter(client=client).aggregate(**sums)
    return {period: _metrics(totals, f"{period}__") for period in PERIODS}


def campaign_performance(*, client: Client) -> list[dict[str, Any]]:
    """Every campaign of the client with all-time counts and rates per sequence step: two queries."""
    steps: dict[uuid.UUID, list[dict[str, Any]]] = {}
    rows = (
        StepDailyStats.objects.filter(client=client)
        .values("campaign_id", "sequence_number")
        .annotate(**{col: Sum(col) for col in STEP_METRICS})
        .order_by("campaign_id", "sequence_number")
    )
    for row in rows:
        steps.setdefault(row["campaign_id"], []).append({"sequence_number": row["sequence_number"], **_metrics(row)})
    return [
        {
            "id": campaign.pk,
            "name": campaign.name,
            "status": campaign.status,
            "is_default": campaign.is_default,
            "steps": steps.get(campaign.pk, []),
        }
        for campaign in Campaign.objects.filter(client=client).order_by("created_at", "id")
    ]


def get_client_campaign(*, client: Client, campaign_id: uuid.UUID) -> Campaign:
    campaign = Campaign.objects.filter(client=client, pk=campaign_id).first()
    if campaign is None:
        raise NotFound("No such campaign.", code="campaign_not_found")
    return campaign


def get_client_mailbox(*, client: Client, mailbox_id: uuid.UUID) -> Mailbox:
    mailbox = Mailbox.objects.filter(client=client, pk=mailbox_id).first()
    if mailbox is None:
        raise NotFound("No such mailbox.", code="mailbox_not_found")
    return mailbox


@dataclass(frozen=True)
class ReplyPage:
    results: list[dict[str, Any]]
    page: int
    page_size: int
    has_next: bool


def check_bounded_int(value: int, *, field: str, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be between {minimum} and {maximum}.", field=field, code="out_of_range")
    return value


def replies_feed(*, client: Client, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE) -> ReplyPage:
    """Replies, auto-replies and bounces of the client's emails, newest first.

    Reads the partial index `event_client_inbound_time` (client, occurred_at DESC, id DESC over the
    three kinds): a page costs `page_size` index entries, not a scan of the client's events.
    """
    check_bounded_int(page, field="page", minimum=1, maximum=100_000)
    check_bounded_int(page_size, field="page_size", minimum=1, maximum=MAX_PAGE_SIZE)
    offset = (page - 1) * page_size
    events = list(
        EmailEvent.objects.filter(client=client, event_type__in=REPLY_KINDS)
        .select_related("lead", "message")
        .order_by("-occurred_at", "-id")[offset : offset + page_size + 1]
    )
    results = [
        {
            "id": event.pk,
            "kind": event.event_type,
            "lead_id": event.lead_id,
            "lead_email": event.lead.email if event.lead else str(event.detail.get("from_email", "")),
            "subject": str(event.detail.get("subject") or (event.message.subject if event.message else "")),
            "snippet": str(event.detail.get("snippet") or ""),
            "received_at": event.occurred_at,
            "sequence_number": event.sequence_number,
            "campaign_id": event.campaign_id,
        }
        for event in events[:page_size]
    ]
    return ReplyPage(results=results, page=page, page_size=page_size, has_next=len(events) > page_size)


def client_timeline(
    *, client: Client, days: int = DEFAULT_TIMELINE_DAYS, now: datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per client-local day, oldest first, ending today; days without activity are zeros."""
    check_bounded_int(days, field="days", minimum=1, maximum=MAX_TIMELINE_DAYS)
    today = client_today(client=client, now=now)
    start = today - timedelta(days=days - 1)
    columns = ("sent", "opens", "clicks", "replies", "bounces", "unsubscribes")
    rows = {
        row["date"]: row
        for row in ClientDailyActivity.objects.filter(client=client, date__gte=start, date__lte=today).values(
            "date", *columns
        )
    }
    timeline = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        row = rows.get(day, {})
        timeline.append({"date": day, **{col: int(row.get(col, 0)) for col in columns}})
    return timeline


def client_mailboxes(*, client: Client, now: datetime | None = None) -> list[dict[str, Any]]:
    """The client's mailboxes with today's sends against the effective daily limit.

    The effective limit is the lower of the mailbox's own limit and the client's per-mailbox
    setting; `sent_today` counts only when it belongs to today's client-local date.
    """
    today = client_today(client=client, now=now)
    mailboxes = []
    for mailbox in Mailbox.objects.filter(client=client).order_by("email", "id"):
        sent_today = mailbox.sent_today if mailbox.sent_today_date == today else 0
        limit = min(mailbox.daily_limit, client.mailbox_daily_limit)
        mailboxes.append(
            {
                "id": mailbox.pk,
                "email": mailbox.email,
                "status": mailbox.status,
                "status_reason": mailbox.status_reason,
                "sent_today": sent_today,
                "daily_limit": limit,
                "remaining_today": max(0, limit - sent_today)
                if mailbox.status in (Mailbox.Status.ACTIVE, Mailbox.Status.LIMITED)
                else 0,
                "last_sent_at": mailbox.last_sent_at,
                "last_error": mailbox.last_error,
                "connected_at": mailbox.connected_at,
            }
        )
    return mailboxes
