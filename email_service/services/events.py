"""The one way an event is recorded: an EmailEvent row and the rollups, in one transaction.

Counting rules (CONTRACT.md): opens, clicks, replies, bounces and unsubscribes count *messages*,
human only. Each message's first human open (click, reply…) is claimed by one conditional UPDATE
of its `first_*_at` column; only the request that wins bumps the rollups, so concurrent requests
never double-count and never lose a count.

Two rollups are kept, both by the client's local calendar day:
- `StepDailyStats`, keyed by the day the message was *sent*: a period's rates divide the messages
  sent in that period by how many of those same messages were opened, clicked… (never above 100%).
- `ClientDailyActivity`, keyed by the day the event *happened*: the timeline.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from email_service.models import (
    ClientDailyActivity,
    EmailEvent,
    EmailSendQueue,
    StepDailyStats,
    event_fields_from_message,
)

Type = EmailEvent.Type


@dataclass(frozen=True)
class _Rule:
    """How one event type moves the per-message facts and the two rollups."""

    first_field: str | None  # the message column claimed by the first such event
    step_column: str | None  # StepDailyStats column bumped when the claim is won
    activity_column: str | None  # ClientDailyActivity column bumped when the claim is won


_HUMAN_RULES: dict[str, _Rule] = {
    Type.SENT: _Rule(None, "sent", "sent"),
    Type.FAILED: _Rule(None, "failed", None),
    Type.OPEN: _Rule("first_opened_at", "opened", "opens"),
    Type.CLICK: _Rule("first_clicked_at", "clicked", "clicks"),
    Type.REPLY: _Rule("replied_at", "replied", "replies"),
    Type.AUTO_REPLY: _Rule("auto_replied_at", "auto_replied", None),
    Type.BOUNCE: _Rule("bounced_at", "bounced", "bounces"),
    Type.UNSUBSCRIBE: _Rule("unsubscribed_at", "unsubscribed", "unsubscribes"),
    Type.QUEUED: _Rule(None, None, None),
}
_MACHINE_RULES: dict[str, _Rule] = {
    Type.OPEN: _Rule("machine_opened_at", "machine_opened", "machine_opens"),
    Type.CLICK: _Rule("machine_clicked_at", "machine_clicked", "machine_clicks"),
}
_COUNTER_FIELDS: dict[str, str] = {Type.OPEN: "open_count", Type.CLICK: "click_count"}


def client_local_date(moment: datetime, tz_name: str) -> date:
    try:
        zone = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return timezone.localtime(moment, zone).date()


def rule_for(event_type: str, *, is_machine: bool) -> _Rule:
    if is_machine:
        # Machine replies, bounces… do not exist; a machine sent/failed would be our own bug.
        return _MACHINE_RULES.get(event_type, _Rule(None, None, None))
    return _HUMAN_RULES[event_type]


def record_event(
    *,
    message: EmailSendQueue,
    event_type: str,
    occurred_at: datetime | None = None,
    is_machine: bool = False,
    machine_reason: str = "",
    dedupe_key: str | None = None,
    tz_name: str | None = None,
    **fields: Any,
) -> EmailEvent | None:
    """Append one event for `message` and update its facts and rollups; None when `dedupe_key` was seen.

    Client, lead, campaign, mailbox and step come from the message row, never from the caller's
    input. `tz_name` spares a query when the caller already knows the client's time zone.
    """
    occurred_at = occurred_at or timezone.now()
    tz_name = tz_name or message.client.timezone
    rule = rule_for(event_type, is_machine=is_machine)
    with transaction.atomic():
        event = EmailEvent(
            **event_fields_from_message(message),
            event_type=event_type,
            occurred_at=occurred_at,
            is_machine=is_machine,
            machine_reason=machine_reason,
            dedupe_key=dedupe_key,
            **fields,
        )
        if dedupe_key is None:
            event.save(force_insert=True)
        else:
            try:
                with transaction.atomic():
                    event.save(force_insert=True)
            except IntegrityError:
                return None
        _apply_rule(
            message=message,
            event_type=event_type,
            is_machine=is_machine,
            rule=rule,
            occurred_at=occurred_at,
            tz_name=tz_name,
        )
    return event


def _apply_rule(
    *, message: EmailSendQueue, event_type: str, is_machine: bool, rule: _Rule, occurred_at: datetime, tz_name: str
) -> None:
    updates: dict[str, Any] = {}
    counter = _COUNTER_FIELDS.get(event_type)
    if counter and not is_machine:
        updates[counter] = models.F(counter) + 1
    won = True
    if rule.first_field:
        # Race condition: many requests may carry the first open; the database lets one win.
        won = (
            EmailSendQueue.objects.filter(pk=message.pk, **{f"{rule.first_field}__isnull": True}).update(
                **{rule.first_field: occurred_at}, **updates
            )
            == 1
        )
        if not won and updates:
            EmailSendQueue.objects.filter(pk=message.pk).update(**updates)
        if won:
            setattr(message, rule.first_field, occurred_at)
    elif updates:
        EmailSendQueue.objects.filter(pk=message.pk).update(**updates)
    if not won:
        return
    if rule.step_column:
        sent_at = occurred_at if event_type in (Type.SENT, Type.FAILED) else (message.sent_at or occurred_at)
        bump_counters(
            StepDailyStats,
            keys={
                "client_id": message.client_id,
                "campaign_id": message.campaign_id,
                "sequence_number": message.sequence_number,
                "date": client_local_date(sent_at, tz_name),
            },
            counts={rule.step_column: 1},
        )
    if rule.activity_column:
        bump_counters(
            ClientDailyActivity,
            keys={"client_id": message.client_id, "date": client_local_date(occurred_at, tz_name)},
            counts={rule.activity_column: 1},
        )


def bump_counters(model: type[models.Model], *, keys: dict[str, Any], counts: dict[str, int]) -> None:
    """Add `counts` to the row of `model` with `keys`, creating it: one atomic upsert.

    PostgreSQL and SQLite both take INSERT … ON CONFLICT DO UPDATE; the other counters fill
    from their database defaults.
    """
    meta = model._meta
    table = connection.ops.quote_name(meta.db_table)
    columns: list[str] = []
    values: list[Any] = []
    for name, value in keys.items():
        field = meta.get_field(name.removesuffix("_id"))
        assert isinstance(field, models.Field)
        target = field.target_field if isinstance(field, models.ForeignKey) else field
        columns.append(str(field.column))
        values.append(target.get_db_prep_value(value, connection, prepared=False))
    conflict = ", ".join(connection.ops.quote_name(c) for c in columns)
    for name, value in counts.items():
        counter = meta.get_field(name)
        assert isinstance(counter, models.Field)
        columns.append(str(counter.column))
        values.append(value)
    quoted = [connection.ops.quote_name(c) for c in columns]
    assignments = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in quoted[len(keys) :])
    sql = (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES ({', '.join(['%s'] * len(values))}) "  # noqa: S608 - identifiers from model metadata, values as parameters
        f"ON CONFLICT ({conflict}) DO UPDATE SET {assignments}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
