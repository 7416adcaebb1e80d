"""Recomputing the rollups from raw events: `manage.py verify_rollups` and time zone changes.

`expected_rollups` replays a client's events through the rules `record_event` applies;
`verify_rollups` compares that replay with the stored rows, and `rebuild_rollups` replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from email_service.events.vocabulary import Type, rule_for, zone_of
from email_service.models import Client, ClientDailyActivity, EmailEvent, EmailSendQueue, StepDailyStats

StepKey = tuple[Any, int, date]  # (campaign_id, sequence_number, client-local send day)
STEP_COLUMNS = (
    "sent",
    "failed",
    "opened",
    "clicked",
    "replied",
    "auto_replied",
    "bounced",
    "unsubscribed",
    "machine_opened",
    "machine_clicked",
)
ACTIVITY_COLUMNS = ("sent", "opens", "clicks", "replies", "bounces", "unsubscribes", "machine_opens", "machine_clicks")


@dataclass
class ExpectedRollups:
    """What the two rollups of one client should hold, as {key: {column: count}} without zeros."""

    steps: dict[StepKey, dict[str, int]]
    activity: dict[date, dict[str, int]]


def expected_rollups(*, client_id: Any, tz_name: str) -> ExpectedRollups:
    """Replay every event of one client, in recording order, through the rules `record_event` applies.

    The per-message "first" claims are re-derived from the events themselves (not from the
    message's `first_*_at` columns), so a lost or doubled rollup increment shows up as a difference.
    Send days come from the message's `sent_at`, as when the event was recorded.
    """
    sent_at: dict[Any, datetime | None] = dict(
        EmailSendQueue.objects.filter(client_id=client_id, sent_at__isnull=False).values_list("pk", "sent_at")
    )
    claimed: set[tuple[Any, str]] = set()
    steps: dict[StepKey, dict[str, int]] = {}
    activity: dict[date, dict[str, int]] = {}
    zone = zone_of(tz_name)
    events = (
        EmailEvent.objects.filter(client_id=client_id)
        .order_by("id")
        .values_list("message_id", "campaign_id", "sequence_number", "event_type", "is_machine", "occurred_at")
    )
    for message_id, campaign_id, sequence_number, event_type, is_machine, occurred_at in events.iterator(
        chunk_size=10_000
    ):
        rule = rule_for(event_type, is_machine=is_machine)
        if rule.first_field:
            if (message_id, rule.first_field) in claimed:
                continue
            claimed.add((message_id, rule.first_field))
        if rule.step_column and campaign_id is not None and sequence_number is not None:
            moment = occurred_at if event_type in (Type.SENT, Type.FAILED) else (sent_at.get(message_id) or occurred_at)
            key = (campaign_id, sequence_number, timezone.localtime(moment, zone).date())
            row = steps.setdefault(key, {})
            row[rule.step_column] = row.get(rule.step_column, 0) + 1
        if rule.activity_column:
            day = activity.setdefault(timezone.localtime(occurred_at, zone).date(), {})
            day[rule.activity_column] = day.get(rule.activity_column, 0) + 1
    return ExpectedRollups(steps=steps, activity=activity)


def actual_rollups(*, client_id: Any) -> ExpectedRollups:
    """The rollup rows as stored, in the same shape as `expected_rollups` (zero counters left out)."""
    steps: dict[StepKey, dict[str, int]] = {}
    for row in StepDailyStats.objects.filter(client_id=client_id).values(
        "campaign_id", "sequence_number", "date", *STEP_COLUMNS
    ):
        counts = {col: row[col] for col in STEP_COLUMNS if row[col]}
        if counts:
            steps[(row["campaign_id"], row["sequence_number"], row["date"])] = counts
    activity: dict[date, dict[str, int]] = {}
    for row in ClientDailyActivity.objects.filter(client_id=client_id).values("date", *ACTIVITY_COLUMNS):
        counts = {col: row[col] for col in ACTIVITY_COLUMNS if row[col]}
        if counts:
            activity[row["date"]] = counts
    return ExpectedRollups(steps=steps, activity=activity)


def rollup_differences(*, expected: ExpectedRollups, actual: ExpectedRollups) -> list[str]:
    """Human-readable lines, one per differing counter; empty when the rollups are exact."""
    lines = []
    for name, want_rows, have_rows in (
        ("StepDailyStats", expected.steps, actual.steps),
        ("ClientDailyActivity", expected.activity, actual.activity),
    ):
        for key in sorted(set(want_rows) | set(have_rows), key=str):
            want, have = want_rows.get(key, {}), have_rows.get(key, {})  # type: ignore[call-overload]
            for column in sorted(set(want) | set(have)):
                if want.get(column, 0) != have.get(column, 0):
                    lines.append(f"{name} {key}: {column} is {have.get(column, 0)}, events say {want.get(column, 0)}")
    return lines


def rebuild_rollups(*, client: Client) -> None:
    """Replace the client's rollup rows with a recomputation from its events (e.g. after a time zone change).

    Call it with the client row locked (`select_for_update`): a concurrent `record_event` inserts
    its event under the same row's key-share lock, so it waits and lands after the rebuild.
    """
    expected = expected_rollups(client_id=client.pk, tz_name=client.timezone)
    with transaction.atomic():
        StepDailyStats.objects.filter(client=client).delete()
        ClientDailyActivity.objects.filter(client=client).delete()
        StepDailyStats.objects.bulk_create(
            StepDailyStats(client=client, campaign_id=campaign_id, sequence_number=step, date=day, **counts)
            for (campaign_id, step, day), counts in expected.steps.items()
        )
        ClientDailyActivity.objects.bulk_create(
            ClientDailyActivity(client=client, date=day, **counts) for day, counts in expected.activity.items()
        )
