"""The one way an event is recorded: an EmailEvent row and the rollups, in one transaction.

Counting rules (CONTRACT.md): opens, clicks, replies, bounces and unsubscribes count *messages*,
human only. Each message's first human open (click, reply…) is claimed by one conditional UPDATE
of its `first_*_at` column; only the request that wins bumps the rollups, so concurrent requests
never double-count and never lose a count.

Two rollups are kept, both by the client's local calendar day:
- `StepDailyStats`, keyed by the day the message was *sent*: a period's rates divide the messages
  sent in that period by how many of those same messages were opened, clicked… (never above 100%).
- `ClientDailyActivity`, keyed by the day the event *happened*: the timeline.

The dashboard (`dashboard.stats`) reads only these rollups: a period such as "last 7 days" is
the sum of the `StepDailyStats` rows whose send day falls in it, so its numbers are the fate of
the emails sent in that period, and its rates never exceed 100%.

How each type counts lives in `events.vocabulary`; `events.rollups` replays events to verify or
rebuild the rollups (a time zone change moves every local day, so `dashboard.client_settings`
rebuilds under the client's row lock). One narrow
race is accepted: an event recorded at the very moment of a time zone change, with the zone read
just before it, is filed under the old zone's day; `verify_rollups` reports it and `--repair`
fixes it. Keeping the hot path free of an extra client read is worth that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from email_service.events.vocabulary import COUNTER_FIELDS, HUMAN_RULES, Rule, Type, client_local_date, rule_for
from email_service.models import (
    ClientDailyActivity,
    EmailEvent,
    EmailSendQueue,
    StepDailyStats,
    event_fields_from_message,
)


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
    # No savepoint inside a caller's transaction: nothing here is caught and carried on from, and
    # a repeated `dedupe_key` is skipped by the INSERT itself (two round trips fewer per event).
    with transaction.atomic(savepoint=False):
        event = EmailEvent(
            **event_fields_from_message(message),
            event_type=event_type,
            occurred_at=occurred_at,
            is_machine=is_machine,
            machine_reason=machine_reason,
            dedupe_key=dedupe_key,
            **fields,
        )
        if not _insert_once(event):
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


_EVENT_FIELDS = [field for field in EmailEvent._meta.concrete_fields if field is not EmailEvent._meta.pk]
_EVENT_INTO = f"INSERT INTO {EmailEvent._meta.db_table} ({', '.join(field.column for field in _EVENT_FIELDS)}) "
_EVENT_ROW = ", ".join(["%s"] * len(_EVENT_FIELDS))
_INSERT_EVENT = f"{_EVENT_INTO}VALUES ({_EVENT_ROW}) ON CONFLICT DO NOTHING RETURNING id"


def _event_values(event: EmailEvent) -> list[Any]:
    return [field.get_db_prep_save(field.pre_save(event, True), connection) for field in _EVENT_FIELDS]


def _insert_once(event: EmailEvent) -> bool:
    """INSERT the event unless its `dedupe_key` is already recorded (the only unique column it has
    besides its generated id); sets its id. PostgreSQL and SQLite both take ON CONFLICT DO NOTHING.
    """
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENT, _event_values(event))
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk = row[0]
    event._state.adding, event._state.db = False, connection.alias
    return True


def record_queued_events(*, messages: Sequence[EmailSendQueue], occurred_at: datetime) -> None:
    """`record_event(QUEUED)` for many new messages in one INSERT.

    Equivalent because a `queued` event moves no fact and no rollup (its rule is empty) and a new
    message has no earlier `queued` event to collide with.
    """
    rule = HUMAN_RULES[Type.QUEUED]
    assert (rule.first_field, rule.step_column, rule.activity_column) == (None, None, None)
    EmailEvent.objects.bulk_create(
        [
            EmailEvent(**event_fields_from_message(message), event_type=Type.QUEUED, occurred_at=occurred_at)
            for message in messages
        ]
    )


def _apply_rule(
    *, message: EmailSendQueue, event_type: str, is_machine: bool, rule: Rule, occurred_at: datetime, tz_name: str
) -> None:
    updates: dict[str, Any] = {}
    counter = COUNTER_FIELDS.get(event_type)
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
    into, row, conflict, values = _upsert_parts(model, keys=keys, counts=counts)
    with connection.cursor() as cursor:
        cursor.execute(f"{into} VALUES ({row}) {conflict}", values)


def _upsert_parts(
    model: type[models.Model], *, keys: dict[str, Any], counts: dict[str, int]
) -> tuple[str, str, str, list[Any]]:
    """`bump_counters`' statement in pieces: INSERT INTO …, the row's placeholders, ON CONFLICT …, values."""
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
    return (
        f"INSERT INTO {table} ({', '.join(quoted)})",
        ", ".join(["%s"] * len(values)),
        f"ON CONFLICT ({conflict}) DO UPDATE SET {assignments}",
        values,
    )


def record_event_after_update(
    *,
    update: tuple[str, list[Any]],
    message: EmailSendQueue,
    event_type: str,
    occurred_at: datetime,
    tz_name: str,
    dedupe_key: str,
    detail: dict[str, Any],
    also: Sequence[tuple[str, list[Any]]] = (),
) -> bool:
    """PostgreSQL: run `update` and, only if it changed a row, `record_event`'s event and rollups, in ONE statement.

    `update` is an `UPDATE … RETURNING 1` of the message (e.g. "sent, if not already"); `also`
    are further data-modifying statements (each ending in its WHERE clause, to which the condition
    is appended) run in the same statement only if it changed a row.
    For event types that move no per-message fact (sent, failed): the same rows as
    `record_event` inside the caller's transaction, without its round trips. False when the
    update matched nothing (then nothing at all is written).
    """
    rule = rule_for(event_type, is_machine=False)
    assert rule.first_field is None and event_type not in COUNTER_FIELDS, event_type
    event = EmailEvent(
        **event_fields_from_message(message),
        event_type=event_type,
        occurred_at=occurred_at,
        dedupe_key=dedupe_key,
        detail=detail,
    )
    update_sql, params = update
    steps = [f"changed AS ({update_sql})"]
    params = [*params, *_event_values(event)]
    # Every identifier below comes from model metadata, every value is a parameter.
    steps.append(
        f"event AS ({_EVENT_INTO}SELECT {_EVENT_ROW} WHERE EXISTS (SELECT 1 FROM changed) "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING id)"
    )
    # A sent or failed event is filed under its own day in both rollups (see _apply_rule).
    day = client_local_date(occurred_at, tz_name)
    rollups: list[tuple[type[models.Model], dict[str, Any], str]] = []
    if rule.step_column:
        keys = {"client_id": message.client_id, "campaign_id": message.campaign_id}
        rollups.append(
            (StepDailyStats, {**keys, "sequence_number": message.sequence_number, "date": day}, rule.step_column)
        )
    if rule.activity_column:
        rollups.append((ClientDailyActivity, {"client_id": message.client_id, "date": day}, rule.activity_column))
    for n, (model, keys, column) in enumerate(rollups):
        into, row, conflict, values = _upsert_parts(model, keys=keys, counts={column: 1})
        steps.append(f"rollup{n} AS ({into} SELECT {row} WHERE EXISTS (SELECT 1 FROM event) {conflict})")  # noqa: S608
        params += values
    for n, (sql, values) in enumerate(also):
        steps.append(f"also{n} AS ({sql} AND EXISTS (SELECT 1 FROM changed))")  # noqa: S608
        params += values
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(steps)} SELECT EXISTS (SELECT 1 FROM changed)", params)  # noqa: S608
        row = cursor.fetchone()
    return bool(row and row[0])


# --- Recording many events at once (the tracking drain) -------------------------------------------


@dataclass
class NewEvent:
    """One event to record in a batch: what `record_event` takes, for a message already locked."""

    message: EmailSendQueue
    event_type: str
    occurred_at: datetime
    is_machine: bool = False
    machine_reason: str = ""
    dedupe_key: str | None = None
    fields: dict[str, Any] | None = None


def lock_messages(*, ids: Iterable[Any]) -> dict[Any, EmailSendQueue]:
    """Lock the messages (in primary-key order, so concurrent batches never deadlock) with their client.

    Call inside a transaction. While a batch holds a message's row, every other recorder of that
    message (another drain, `record_event`'s conditional updates) waits, so the batch's reading of
    its `first_*_at` columns stays true until it commits.
    """
    rows = (
        EmailSendQueue.objects.filter(pk__in=set(ids))
        .select_related("client")
        .select_for_update(of=("self",))
        .order_by("pk")
    )
    return {message.pk: message for message in rows}


_BATCH_FIRST_FIELDS = ("first_opened_at", "first_clicked_at", "machine_opened_at", "machine_clicked_at")


def record_events_batch(
    *,
    events: Sequence[NewEvent],
    follow_up: Callable[[NewEvent], NewEvent | None] | None = None,
) -> list[EmailEvent]:
    """Record opens and clicks of locked messages with the same rules as `record_event`, in a few statements.

    Events whose `dedupe_key` was recorded before are skipped. `follow_up` is asked after each event
    that is recorded and may return one more to record right after it (a person's click implying an
    open), seeing the message's facts as updated by the events before it. The statements: one
    SELECT for known dedupe keys, one multi-row INSERT of the events, one UPDATE of the messages
    from a VALUES list, one upsert per rollup row touched (in key order). Must run in a transaction
    holding the messages' locks (`lock_messages`).
    """
    keys = [event.dedupe_key for event in events if event.dedupe_key]
    seen = set(EmailEvent.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)) if keys else set()
    rows: list[EmailEvent] = []
    counters: dict[Any, dict[str, int]] = {}
    firsts: dict[Any, dict[str, datetime]] = {}
    steps: dict[tuple[Any, Any, int, date], dict[str, int]] = {}
    activity: dict[tuple[Any, date], dict[str, int]] = {}

    def apply(event: NewEvent) -> None:
        if event.dedupe_key is not None:
            if event.dedupe_key in seen:
                return
            seen.add(event.dedupe_key)
        message = event.message
        rule = rule_for(event.event_type, is_machine=event.is_machine)
        if rule.first_field is not None and rule.first_field not in _BATCH_FIRST_FIELDS:
            raise ValueError(f"{event.event_type} events are recorded one by one (record_event)")
        rows.append(
            EmailEvent(
                **event_fields_from_message(message),
                event_type=event.event_type,
                occurred_at=event.occurred_at,
                is_machine=event.is_machine,
                machine_reason=event.machine_reason,
                dedupe_key=event.dedupe_key,
                **(event.fields or {}),
            )
        )
        counter = COUNTER_FIELDS.get(event.event_type)
        if counter and not event.is_machine:
            per_message = counters.setdefault(message.pk, {})
            per_message[counter] = per_message.get(counter, 0) + 1
        if rule.first_field:
            if getattr(message, rule.first_field) is not None:
                return
            setattr(message, rule.first_field, event.occurred_at)
            firsts.setdefault(message.pk, {})[rule.first_field] = event.occurred_at
        tz_name = message.client.timezone
        if rule.step_column:
            key = (
                message.client_id,
                message.campaign_id,
                message.sequence_number,
                client_local_date(message.sent_at or event.occurred_at, tz_name),
            )
            row = steps.setdefault(key, {})
            row[rule.step_column] = row.get(rule.step_column, 0) + 1
        if rule.activity_column:
            day_key = (message.client_id, client_local_date(event.occurred_at, tz_name))
            day = activity.setdefault(day_key, {})
            day[rule.activity_column] = day.get(rule.activity_column, 0) + 1
        if follow_up is not None:
            extra = follow_up(event)
            if extra is not None:
                apply(extra)

    for event in events:
        apply(event)
    if not rows:
        return []
    # One INSERT, in the order the rules were applied: ids follow that order, as expected_rollups replays.
    created = EmailEvent.objects.bulk_create(rows)
    _update_messages(counters=counters, firsts=firsts)
    for (client_id, campaign_id, sequence_number, day), counts in sorted(steps.items(), key=lambda kv: str(kv[0])):
        bump_counters(
            StepDailyStats,
            keys={"client_id": client_id, "campaign_id": campaign_id, "sequence_number": sequence_number, "date": day},
            counts=counts,
        )
    for (client_id, day), counts in sorted(activity.items(), key=lambda kv: str(kv[0])):
        bump_counters(ClientDailyActivity, keys={"client_id": client_id, "date": day}, counts=counts)
    return created


def _update_messages(*, counters: dict[Any, dict[str, int]], firsts: dict[Any, dict[str, datetime]]) -> None:
    """One UPDATE … FROM (VALUES …) adding the counters and setting the won `first_*_at` of each message."""
    ids = sorted(set(counters) | set(firsts), key=str)
    if not ids:
        return
    meta = EmailSendQueue._meta
    qn = connection.ops.quote_name
    table = qn(meta.db_table)
    counter_columns = sorted(set(COUNTER_FIELDS.values()))
    values: list[Any] = []
    tuples = []
    for pk in ids:
        tuples.append("(" + ", ".join(["%s"] * (1 + len(counter_columns) + len(_BATCH_FIRST_FIELDS))) + ")")
        values.append(pk)
        values.extend(counters.get(pk, {}).get(column, 0) for column in counter_columns)
        values.extend(firsts.get(pk, {}).get(column) for column in _BATCH_FIRST_FIELDS)
    names = ["pk", *counter_columns, *_BATCH_FIRST_FIELDS]
    assignments = [f"{qn(c)} = m.{qn(c)} + v.{qn(c)}::integer" for c in counter_columns] + [
        f"{qn(c)} = COALESCE(m.{qn(c)}, v.{qn(c)}::timestamptz)" for c in _BATCH_FIRST_FIELDS
    ]
    sql = (
        f"UPDATE {table} AS m SET {', '.join(assignments)} "  # noqa: S608 - identifiers from model metadata, values as parameters
        f"FROM (VALUES {', '.join(tuples)}) AS v({', '.join(qn(n) for n in names)}) "
        f"WHERE m.{qn(meta.pk.column)} = v.{qn('pk')}::uuid"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
