"""Per-mailbox pace and daily cap: ONE atomic conditional UPDATE on the mailbox row (DESIGN.md decision 4).

`reserve_send_slot` is the only way a send may start. In a single PostgreSQL statement, on the
database's clock, it checks and moves everything that must hold across any number of workers and
machines (SQLite, for development only, gets the same statement on the worker's clock):

* pace: the mailbox's `next_send_at` has passed. The interval is max(1 / `max_sends_per_second`,
  a gap drawn between the client's `min_gap_seconds` and `max_gap_seconds`); the next slot is one
  interval after the previous slot (so a turn that ran late does not drag the schedule), but never
  sooner than 0.9 interval after now. Hence no mailbox ever exceeds its rate on average, two sends
  start at least 0.9/rate apart (2.5/s: 0.36 s), and any T seconds hold at most
  floor((T + 0.1/rate) x rate) + 1 sends;
* daily cap: fewer than `min(mailbox.daily_limit, client.mailbox_daily_limit)` sends counted on
  the client's *local* day. The count restarts by itself when `sent_today_date` is an older day,
  so a missed midnight reset (beat down) never blocks nor over-allows a mailbox;
* status: the mailbox is active, or `limited` with its limit lifted (`cooldown_until` passed),
  and is not cooling down after a Gmail rate limit.

Row locks serialise concurrent callers on the same mailbox; the loser re-evaluates the WHERE
clause against the winner's values and matches nothing. A slot whose email then does not leave
(refused by Gmail, suppressed, nothing to claim) hands its cap unit back with `release_send_slot`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from email_service.models import Client, Mailbox
from email_service.sending.windows import local_today, next_local_midnight

_TABLE = Mailbox._meta.db_table
# A turn that runs a little late keeps the mailbox on its schedule: the next slot stays one interval
# after the previous *slot*, as long as that is at least (1 - PACE_SLACK) intervals after now. Two
# sends are therefore >= 0.9 / rate apart, and over any T seconds the average stays <= rate.
PACE_SLACK = 0.1


@dataclass(frozen=True)
class SlotReservation:
    """A granted send slot: the mailbox's count for the day including this send, and its next slot."""

    mailbox_id: uuid.UUID | str
    day: date
    sent_today: int
    next_send_at: datetime
    granted_at: datetime
    """The database's time when the slot was granted."""


def daily_cap(*, mailbox: Mailbox, client: Client) -> int:
    return max(1, min(mailbox.daily_limit, client.mailbox_daily_limit))


def send_interval_seconds(mailbox: Mailbox) -> float:
    """The shortest time between two sends of this mailbox: its own rate, never above the global ceiling."""
    rate = min(mailbox.max_sends_per_second, settings.MAILBOX_MAX_SENDS_PER_SECOND)
    return 1.0 / rate


def draw_gap_seconds(*, client: Client, rng: random.Random | None = None) -> float:
    """The random pause before this mailbox's next send, between the client's min and max gap."""
    low, high = float(client.min_gap_seconds), float(max(client.max_gap_seconds, client.min_gap_seconds))
    if high <= 0:
        return 0.0
    return (rng or random).uniform(low, high)


def reserve_send_slot(
    *, mailbox: Mailbox, client: Client, now: datetime | None = None, gap_seconds: float = 0.0
) -> SlotReservation | None:
    """Take one send slot for the mailbox now, or None when pace, cap, cooldown or status forbid it.

    "Now" is the database's clock (`statement_timestamp()`), not this worker's: workers on machines
    whose clocks disagree still hold one pace. A given `now` replaces it (tests travel in time).
    """
    if connection.vendor != "postgresql":
        return _reserve_send_slot_portable(mailbox=mailbox, client=client, now=now or timezone.now(), gap=gap_seconds)
    ops = connection.ops
    params = {
        "id": Mailbox._meta.pk.get_db_prep_value(mailbox.pk, connection),
        "now": ops.adapt_datetimefield_value(now) if now is not None else None,
        "ceiling": float(settings.MAILBOX_MAX_SENDS_PER_SECOND),
        "slack": 1 - PACE_SLACK,
        "gap": gap_seconds,
        "active": Mailbox.Status.ACTIVE.value,
        "limited": Mailbox.Status.LIMITED.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    # The statement returns the whole row as it now is: the caller's copy is current again (a
    # worker may keep its copy between turns; the limits it enforces were read by the statement).
    for field, value in zip(_MAILBOX_FIELDS, row, strict=False):
        setattr(mailbox, field.attname, value)
    granted_at = row[-1]
    return SlotReservation(
        mailbox_id=mailbox.pk,
        day=mailbox.sent_today_date,  # type: ignore[arg-type]  # set by the statement
        sent_today=mailbox.sent_today,
        next_send_at=mailbox.next_send_at,  # type: ignore[arg-type]  # set by the statement
        granted_at=granted_at,
    )


_MAILBOX_FIELDS = list(Mailbox._meta.concrete_fields)
_CLIENT_TABLE = Client._meta.db_table
# Everything is computed from the rows as they are when the statement gets its lock: a concurrent
# winner's values are re-read (READ COMMITTED re-evaluates WHERE and SET on the new version), so
# its `next_send_at` in the future makes this statement match nothing. The rate, the caps and the
# time zone are read from the mailbox and client rows here, not from the caller's copies.
# The slot after this one: one interval after the previous slot (on schedule even if this turn
# ran late), never sooner than 0.9 interval from now, never before the client's gap.
_INTERVAL = "(1.0 / LEAST(m.max_sends_per_second, %(ceiling)s))"
_TODAY = "(clock.now AT TIME ZONE c.timezone)::date"
_RESERVE_SQL = f"""
    WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now)
    UPDATE {_TABLE} AS m SET
        sent_today = CASE WHEN m.sent_today_date = {_TODAY} THEN m.sent_today + 1 ELSE 1 END,
        sent_today_date = {_TODAY},
        next_send_at = GREATEST(
            clock.now + GREATEST({_INTERVAL} * %(slack)s, %(gap)s) * INTERVAL '1 second',
            m.next_send_at + GREATEST({_INTERVAL}, %(gap)s) * INTERVAL '1 second'
        ),
        last_sent_at = clock.now,
        status = %(active)s,
        status_reason = CASE WHEN m.status = %(limited)s THEN '' ELSE m.status_reason END,
        cooldown_until = NULL
    FROM clock, {_CLIENT_TABLE} AS c
    WHERE m.id = %(id)s AND c.id = m.client_id
      AND (m.status = %(active)s OR (m.status = %(limited)s AND m.cooldown_until <= clock.now))
      AND (m.cooldown_until IS NULL OR m.cooldown_until <= clock.now)
      AND (m.next_send_at IS NULL OR m.next_send_at <= clock.now)
      AND (CASE WHEN m.sent_today_date = {_TODAY} THEN m.sent_today ELSE 0 END)
          < GREATEST(1, LEAST(m.daily_limit, c.mailbox_daily_limit))
    RETURNING {", ".join(f"m.{field.column}" for field in _MAILBOX_FIELDS)}, clock.now
"""  # noqa: S608 - table and column names come from model metadata; every value is a parameter


def _reserve_send_slot_portable(
    *, mailbox: Mailbox, client: Client, now: datetime, gap: float
) -> SlotReservation | None:
    """The same statement for SQLite (development only): the worker's clock, compare-and-set on the slot."""
    today = local_today(client, now)
    rate_interval = send_interval_seconds(mailbox)
    soonest = now + timedelta(seconds=max(rate_interval * (1 - PACE_SLACK), gap))
    previous = mailbox.next_send_at
    next_send_at = soonest
    if previous is not None:
        next_send_at = max(soonest, previous + timedelta(seconds=max(rate_interval, gap)))
    ops = connection.ops
    params = {
        "id": Mailbox._meta.pk.get_db_prep_value(mailbox.pk, connection),
        "now": ops.adapt_datetimefield_value(now),
        "previous": ops.adapt_datetimefield_value(previous),
        "next": ops.adapt_datetimefield_value(next_send_at),
        "today": ops.adapt_datefield_value(today),
        "cap": daily_cap(mailbox=mailbox, client=client),
        "active": Mailbox.Status.ACTIVE.value,
        "limited": Mailbox.Status.LIMITED.value,
    }
    sql = f"""
        UPDATE {_TABLE} SET
            sent_today = CASE WHEN sent_today_date = %(today)s THEN sent_today + 1 ELSE 1 END,
            sent_today_date = %(today)s,
            next_send_at = %(next)s,
            last_sent_at = %(now)s,
            status = %(active)s,
            status_reason = CASE WHEN status = %(limited)s THEN '' ELSE status_reason END,
            cooldown_until = NULL
        WHERE id = %(id)s
          AND (status = %(active)s OR (status = %(limited)s AND cooldown_until <= %(now)s))
          AND (cooldown_until IS NULL OR cooldown_until <= %(now)s)
          AND (next_send_at IS NULL OR next_send_at <= %(now)s)
          AND (next_send_at = %(previous)s OR (next_send_at IS NULL AND %(previous)s IS NULL))
          AND (CASE WHEN sent_today_date = %(today)s THEN sent_today ELSE 0 END) < %(cap)s
        RETURNING sent_today
    """  # noqa: S608 - the table name comes from model metadata; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    sent_today = int(row[0])
    mailbox.sent_today, mailbox.sent_today_date, mailbox.next_send_at = sent_today, today, next_send_at
    mailbox.status, mailbox.cooldown_until, mailbox.last_sent_at = Mailbox.Status.ACTIVE, None, now
    return SlotReservation(
        mailbox_id=mailbox.pk, day=today, sent_today=sent_today, next_send_at=next_send_at, granted_at=now
    )


def release_send_slot(*, reservation: SlotReservation) -> None:
    """Give back the cap unit of a slot whose email did not leave (the pace is kept: it is past)."""
    Mailbox.objects.filter(pk=reservation.mailbox_id, sent_today_date=reservation.day, sent_today__gt=0).update(
        sent_today=F("sent_today") - 1
    )


def remaining_today(*, mailbox: Mailbox, client: Client, now: datetime | None = None) -> int:
    """How many more sends the mailbox may make on the client's current local day."""
    now = now or timezone.now()
    used = mailbox.sent_today if mailbox.sent_today_date == local_today(client, now) else 0
    return max(0, daily_cap(mailbox=mailbox, client=client) - used)


def cool_down(*, mailbox: Mailbox, until: datetime, reason: str) -> None:
    """Gmail asked this mailbox to back off: no slot is granted before `until`."""
    now = timezone.now()
    Mailbox.objects.filter(pk=mailbox.pk).update(
        cooldown_until=until, last_error=reason[:1000], last_error_at=now, updated_at=now
    )


def mark_daily_limit_reached(*, mailbox: Mailbox, client: Client, reason: str, now: datetime | None = None) -> datetime:
    """Gmail says the mailbox used its day: `limited` until the client's next local midnight."""
    now = now or timezone.now()
    lifts_at = next_local_midnight(client, now)
    Mailbox.objects.filter(pk=mailbox.pk, status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.LIMITED]).update(
        status=Mailbox.Status.LIMITED,
        status_reason="daily sending limit reached",
        cooldown_until=lifts_at,
        last_error=reason[:1000],
        last_error_at=now,
        updated_at=now,
    )
    return lifts_at


def reset_daily_counts(*, now: datetime | None = None) -> int:
    """Start a new day for every mailbox whose client-local day has turned; lift expired daily limits.

    Run by beat every quarter hour (clients' midnights fall at different UTC times). The pacing
    statement does not depend on it: a missed run changes only what dashboards show meanwhile.
    """
    now = now or timezone.now()
    changed = 0
    for mailbox in Mailbox.objects.select_related("client").only(
        "id", "sent_today", "sent_today_date", "status", "cooldown_until", "client__timezone"
    ):
        today = local_today(mailbox.client, now)
        if mailbox.sent_today_date is not None and mailbox.sent_today_date < today:
            changed += Mailbox.objects.filter(pk=mailbox.pk, sent_today_date=mailbox.sent_today_date).update(
                sent_today=0, sent_today_date=today, updated_at=now
            )
        if mailbox.status == Mailbox.Status.LIMITED and mailbox.cooldown_until and mailbox.cooldown_until <= now:
            Mailbox.objects.filter(pk=mailbox.pk, status=Mailbox.Status.LIMITED, cooldown_until__lte=now).update(
                status=Mailbox.Status.ACTIVE, status_reason="", cooldown_until=None, updated_at=now
            )
    return changed
