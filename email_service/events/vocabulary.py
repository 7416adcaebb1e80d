"""How each event type counts: the per-message "first" claim and the rollup columns it moves.

Counting rules (CONTRACT.md): opens, clicks, replies, bounces and unsubscribes count *messages*,
human only; machine opens and clicks have columns of their own. Days are the client's local days.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime

from django.utils import timezone

from email_service.models import EmailEvent

Type = EmailEvent.Type


@dataclass(frozen=True)
class Rule:
    """How one event type moves the per-message facts and the two rollups."""

    first_field: str | None  # the message column claimed by the first such event
    step_column: str | None  # StepDailyStats column bumped when the claim is won
    activity_column: str | None  # ClientDailyActivity column bumped when the claim is won


HUMAN_RULES: dict[str, Rule] = {
    Type.SENT: Rule(None, "sent", "sent"),
    Type.FAILED: Rule(None, "failed", None),
    Type.OPEN: Rule("first_opened_at", "opened", "opens"),
    Type.CLICK: Rule("first_clicked_at", "clicked", "clicks"),
    Type.REPLY: Rule("replied_at", "replied", "replies"),
    Type.AUTO_REPLY: Rule("auto_replied_at", "auto_replied", None),
    Type.BOUNCE: Rule("bounced_at", "bounced", "bounces"),
    Type.UNSUBSCRIBE: Rule("unsubscribed_at", "unsubscribed", "unsubscribes"),
    Type.QUEUED: Rule(None, None, None),
}
MACHINE_RULES: dict[str, Rule] = {
    Type.OPEN: Rule("machine_opened_at", "machine_opened", "machine_opens"),
    Type.CLICK: Rule("machine_clicked_at", "machine_clicked", "machine_clicks"),
}
COUNTER_FIELDS: dict[str, str] = {Type.OPEN: "open_count", Type.CLICK: "click_count"}


def zone_of(tz_name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def client_local_date(moment: datetime, tz_name: str) -> date:
    return timezone.localtime(moment, zone_of(tz_name)).date()


def rule_for(event_type: str, *, is_machine: bool) -> Rule:
    if is_machine:
        # Machine replies, bounces… do not exist; a machine sent/failed would be our own bug.
        return MACHINE_RULES.get(event_type, Rule(None, None, None))
    return HUMAN_RULES[event_type]
