"""Dashboard selectors: every read a client's dashboard makes, scoped to that client.

Each function takes the client of the verified token and reads only that client's rows; an id of
another client's object is NotFound, never a 403 (DESIGN.md decision 9). Statistics come from the
rollups that `services.events.record_event` keeps (`StepDailyStats` by send day for counts and
rates, `ClientDailyActivity` by event day for the timeline), so each route reads a few hundred
rows at most, whatever the number of raw events. Days are the client's local calendar days.
"""

from __future__ import annotations

import base64
import uuid
import zoneinfo
from collections.abc import Mapping
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
    next_cursor: str | None


# Offset paging reads every skipped row; past this depth the feed asks for its cursor instead.
MAX_REPLY_OFFSET = 10_000


def encode_reply_cursor(*, occurred_at: datetime, event_id: int) -> str:
    """An opaque position in the feed: the (time, id) of the last entry seen."""
    raw = f"{occurred_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_reply_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, event_id = raw.split("|")
        occurred_at = datetime.fromisoformat(moment)
        if occurred_at.tzinfo is None:
            raise ValueError
        return occurred_at, int(event_id)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput("cursor is not a cursor this feed gave.", field="cursor", code="invalid_cursor") from None


def check_bounded_int(value: int, *, field: str, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be between {minimum} and {maximum}.", field=field, code="out_of_range")
    return value


def _reply_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    detail = row["detail"] if isinstance(row["detail"], dict) else {}
    return {
        "id": row["id"],
        "kind": row["event_type"],
        "lead_id": row["lead_id"],
        "lead_email": row["lead__email"] or str(detail.get("from_email") or ""),
        "subject": str(detail.get("subject") or row["message__subject"] or ""),
        "snippet": str(detail.get("snippet") or ""),
        "received_at": row["occurred_at"],
        "sequence_number": row["sequence_number"],
        "campaign_id": row["campaign_id"],
    }


def replies_feed(
    *, client: Client, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
) -> ReplyPage:
    """Replies, auto-replies and bounces of the client's emails, newest first; machine-labelled ones left out.

    A transient (4.x.x) bounce is kept as a machine-labelled `bounce` event (not final, counted
    nowhere): it is not a bounce the client should read about, so the feed skips it.

    Reads the partial index `event_client_inbound_time` (client, occurred_at DESC, id DESC over the
    three kinds). With `cursor` (the previous page's `next_cursor`) a page starts right after the
    last entry seen and costs `page_size` index entries at any depth; `page` numbers are offered
    for the first MAX_REPLY_OFFSET entries only, because an offset reads every row it skips.
    """
    check_bounded_int(page_size, field="page_size", minimum=1, maximum=MAX_PAGE_SIZE)
    check_bounded_int(page, field="page", minimum=1, maximum=MAX_REPLY_OFFSET // page_size)
    events_query = EmailEvent.objects.filter(client=client, event_type__in=REPLY_KINDS, is_machine=False)
    if cursor is not None:
        if page != 1:
            raise InvalidInput("page cannot be combined with cursor.", field="page", code="page_with_cursor")
        occurred_at, event_id = decode_reply_cursor(cursor)
        # `occurred_at <= t` bounds the index scan; ties at t are cut by id.
        events_query = events_query.filter(occurred_at__lte=occurred_at).exclude(
            occurred_at=occurred_at, id__gte=event_id
        )
    offset = (page - 1) * page_size
    # Two steps: the page's ids from the index alone (skipped rows cost an index entry, not a row
    # and two joins), then those rows with their lead and message.
    ids = list(
        events_query.order_by("-occurred_at", "-id").values_list("id", flat=True)[offset : offset + page_size + 1]
    )
    # Only the columns the feed shows: no model instances for a hundred events and their joins.
    rows = EmailEvent.objects.filter(pk__in=ids[:page_size]).values(
        "id",
        "event_type",
        "lead_id",
        "lead__email",
        "detail",
        "message__subject",
        "occurred_at",
        "sequence_number",
        "campaign_id",
    )
    results = [_reply_entry(row) for row in sorted(rows, key=lambda row: (row["occurred_at"], row["id"]), reverse=True)]
    has_next = len(ids) > page_size
    last = results[-1] if has_next else None
    return ReplyPage(
        results=results,
        page=page,
        page_size=page_size,
        has_next=has_next,
        next_cursor=encode_reply_cursor(occurred_at=last["received_at"], event_id=last["id"]) if last else None,
    )


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
