"""The dispatcher and the send: claim under a lease, send once, record first, resolve the unknown.

How the queue drains (DESIGN.md decisions 1-4):

* Each mailbox with due work runs *turns*. A turn takes one pace/cap slot (services.pacing, one
  atomic UPDATE), claims one due row with `SELECT … FOR UPDATE SKIP LOCKED` (status `sending`, a
  lease, a claimant, a fixed Message-ID), then sends. One Celery task (`send_turns`, carrying only
  mailbox ids) runs the turns of a small group of mailboxes for a few seconds, each as soon as its
  pace allows, then hands the group on to a fresh task (`run_turns`): the Celery cost is paid per
  group and budget, not per email. Turns of many mailboxes run in parallel on any number of
  workers; PostgreSQL decides who gets what. A cache key per mailbox names the *chain* of turn
  tasks serving it and until when that chain must show itself alive: a chain lost with a killed
  worker is taken over by the dispatcher once that moment passes (TURN_START_GRACE_SECONDS after
  its task was due), and a late task of a superseded chain drops the mailbox.
* A row is claimable when it is `queued`, due, its campaign is active, the client's window is
  open, and no earlier step of the same lead and campaign is still unsent (a follow-up waits for
  its predecessor, so it can thread under it).
* After Gmail accepts, the result is written first (`sent`, Gmail ids, the Message-ID Gmail
  stored), then the `sent` event and rollups. Nothing after an accepted send can make it unsent.
* A send whose outcome is unknown (5xx, timeout, dropped connection after the request left, or a
  worker that died holding a lease) is never simply retried: the row stays `sending` with reason
  `outcome_unknown` until `resolve_email` asks the mailbox for its Message-ID, then for its
  `X-Oree-Queue-Id` among recent sent mail to that recipient, and re-queues only if neither exists.
* A follow-up whose earlier Gmail thread no longer exists (404 on `threadId`) goes out at once as
  a new thread in the sender's mailbox (still In-Reply-To the earlier email), reason THREAD_MISSING.
* A mailbox at its daily cap takes no turn until the cap lifts (its next local midnight).
* Transient failures back off exponentially (1, 2, 4, 8 minutes); the MAX_SEND_ATTEMPTS-th
  failure marks the row `failed` with the last error. Every row ends in a visible state and reason.

The lease outlives the send task's hard time limit, so a live worker never loses its row to the
sweep; the sweep only ever takes over rows whose worker is gone.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, models, transaction
from django.db.models import Exists, Min, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone

from email_service.events.recording import record_event, record_event_after_update
from email_service.gmail import client as g
from email_service.gmail.client import QUEUE_ID_HEADER, GmailClient, SentMessage
from email_service.mailboxes.clients import forget_gmail_client, gmail_for
from email_service.mailboxes.credentials import TokenDecryptionError
from email_service.mailboxes.lifecycle import disconnect_mailbox, mailbox_authorization_revoked
from email_service.models import Campaign, Client, EmailEvent, EmailSendQueue, Lead, Mailbox, Suppression
from email_service.sending import pacing
from email_service.sending.assignment import SENDING_MAILBOX_STATUSES, mailbox_for_lead
from email_service.sending.message_builder import BuiltMessage, build_message, message_id_suffix, new_message_id
from email_service.sending.windows import SendWindow, next_local_midnight, scheduled_for

logger = logging.getLogger(__name__)
Status = EmailSendQueue.Status

MAX_SEND_ATTEMPTS = 5
"""A row fails for good on its fifth transient failure (after backoffs of 1, 2, 4 and 8 minutes)."""
BACKOFF_MAX_SECONDS = 3600
RATE_LIMIT_DEFAULT_SECONDS = 60
# How far ahead a mailbox's next turn is scheduled; beyond it the beat dispatcher brings it back.
TURN_HORIZON = timedelta(seconds=120)
# One turn task serves its mailboxes for up to this long (see run_turns), then hands them on.
TURN_BUDGET_SECONDS = 5.0
# Due mailboxes are spread over about this many turn tasks, with at most TURN_GROUP_MAX per task.
TURN_TASKS_TARGET = 16
TURN_GROUP_MAX = 8
UNSENT_BEFORE_STEP = (Status.QUEUED, Status.SENDING, Status.PAUSED, Status.HELD)

REASON_UNKNOWN = "outcome_unknown"
THREAD_MISSING = "sent_in_new_thread_previous_thread_missing"
"""A follow-up whose earlier Gmail thread no longer exists went out as a new thread (reason kept on the row)."""


def lease_seconds() -> int:
    return int(settings.SEND_LEASE_SECONDS)


def unknown_resolve_delay() -> timedelta:
    """Time Gmail gets to index a message before we search for it (its search lags the send)."""
    return timedelta(seconds=settings.SEND_UNKNOWN_RESOLVE_DELAY_SECONDS)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    base = min(settings.SEND_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), BACKOFF_MAX_SECONDS)
    return timedelta(seconds=base * (rng or random).uniform(0.8, 1.2))


# =========================================================================== claiming


@dataclass
class Claim:
    email: EmailSendQueue
    mailbox: Mailbox
    client: Client
    reservation: pacing.SlotReservation
    worker: str
    fresh: bool = False
    """This claim fixed the row's Message-ID: its first build, no tracking rows of an earlier one."""


@dataclass(frozen=True)
class Turn:
    """What one mailbox turn did, and when the mailbox should take its next one (None: nothing due)."""

    claim: Claim | None
    next_turn_at: datetime | None
    skipped: str = ""
    rest_until: datetime | None = None
    """Set when the mailbox cannot send before this time (its daily cap): no turn is started before."""


class _NoClaim(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_CLAIM_FIELDS = [
    "status",
    "status_reason",
    "attempts",
    "lease_expires_at",
    "claimed_by",
    "send_started_at",
    "message_id",
    "updated_at",
]


def claimable_emails(*, mailbox_id: uuid.UUID | str, now: datetime | None) -> Any:
    """Queued rows of the mailbox whose campaign is active and whose earlier steps have left (due by `now`)."""
    earlier_unsent = EmailSendQueue.objects.filter(
        lead_id=OuterRef("lead_id"),
        campaign_id=OuterRef("campaign_id"),
        sequence_number__lt=OuterRef("sequence_number"),
        status__in=UNSENT_BEFORE_STEP,
    )
    rows = EmailSendQueue.objects.filter(
        mailbox_id=mailbox_id, status=Status.QUEUED, campaign__status=Campaign.Status.ACTIVE
    ).filter(~Exists(earlier_unsent))
    return rows if now is None else rows.filter(next_attempt_at__lte=now)


def claim_next_email(
    *,
    mailbox_id: uuid.UUID | str,
    worker: str,
    now: datetime | None = None,
    rng: random.Random | None = None,
    loaded: tuple[Mailbox, Client] | None = None,
) -> Turn:
    """Take one pace slot and one due row of the mailbox, in one transaction; see the module docstring.

    Without `now`, the slot and the due check use the database's clock (see services.pacing).
    `loaded`: the mailbox and client as a previous turn of this task left them (run_turns), to
    spare their reload. Nothing that must hold is decided on that copy: the pacing statement reads
    status, rate, caps and time zone from the rows themselves and returns the mailbox as it now is,
    and a refused slot reloads both before telling why. Only the send window and the gap are taken
    from the copy, at most one turn budget old.
    """
    db_now = now
    now = now or timezone.now()
    if loaded is None:
        mailbox = Mailbox.objects.select_related("client").filter(pk=mailbox_id).first()
        if mailbox is None or mailbox.status not in SENDING_MAILBOX_STATUSES:
            return Turn(None, None, "mailbox_not_sending")
        client = mailbox.client
    else:
        mailbox, client = loaded
    window = SendWindow.for_client(client)
    opening = window.next_opening(now)
    if opening != now:
        return Turn(None, _next_due(mailbox, earliest=opening, now=now) if opening else None, "window_closed")
    try:
        with transaction.atomic():
            reservation = pacing.reserve_send_slot(
                mailbox=mailbox, client=client, now=db_now, gap_seconds=pacing.draw_gap_seconds(client=client, rng=rng)
            )
            if reservation is None:
                raise _NoClaim("paced")
            now = reservation.granted_at
            claimed = _claim_due_row(
                mailbox=mailbox, worker=worker, now=now, lease_until=now + timedelta(seconds=lease_seconds())
            )
            if claimed is None:
                raise _NoClaim("nothing_due")  # rolls the slot back untouched
            email, fresh = claimed
            if email.status == Status.CANCELLED:
                pacing.release_send_slot(reservation=reservation)
                return Turn(None, reservation.next_send_at, "suppressed")
    except _NoClaim as no_claim:
        if no_claim.reason == "paced":
            if loaded is not None:
                # Our copy may be behind (another worker's send, a pause): decide on the rows.
                current = Mailbox.objects.select_related("client").filter(pk=mailbox_id).first()
                if current is None or current.status not in SENDING_MAILBOX_STATUSES:
                    return Turn(None, None, "mailbox_not_sending")
                mailbox, client = current, current.client
            free_at = _mailbox_free_at(mailbox, client, now)
            if free_at - now > TURN_HORIZON:
                # At its daily cap (ours or Gmail's): no turn until the mailbox can send again.
                return Turn(None, None, "daily_cap", rest_until=free_at)
            return Turn(None, _next_due(mailbox, earliest=free_at, now=now), "paced")
        return Turn(None, _next_due(mailbox, earliest=now, now=now), no_claim.reason)
    email.mailbox, email.client = mailbox, client
    return Turn(Claim(email, mailbox, client, reservation, worker, fresh), reservation.next_send_at)


def _claim_due_row(
    *, mailbox: Mailbox, worker: str, now: datetime, lease_until: datetime
) -> tuple[EmailSendQueue, bool] | None:
    """Lock the mailbox's next claimable row (`SKIP LOCKED`) and claim it; None when nothing is due.

    The lead's status and the suppression list are read in the claiming statement itself: an
    unsubscribe or reply may have come in since enqueue. Such a row comes back `cancelled`
    (`recipient_suppressed`) instead of claimed. The flag says whether this claim fixed the row's
    Message-ID (its first build). Must run inside the transaction that took the pace slot.
    """
    if connection.vendor == "postgresql":
        return _claim_due_row_postgresql(mailbox=mailbox, worker=worker, now=now, lease_until=lease_until)
    email = (
        claimable_emails(mailbox_id=mailbox.pk, now=now)
        .annotate(
            lead_active=Exists(Lead.objects.filter(pk=OuterRef("lead_id"), status=Lead.Status.ACTIVE)),
            suppressed=Exists(
                Suppression.objects.filter(client_id=OuterRef("client_id"), email=Lower(OuterRef("recipient_email")))
            ),
        )
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("next_attempt_at", "sequence_number", "created_at")
        .first()
    )
    if email is None:
        return None
    if not email.lead_active or email.suppressed:
        email.status, email.status_reason, email.updated_at = Status.CANCELLED, SUPPRESSED, now
        email.save(update_fields=["status", "status_reason", "updated_at"])
        return email, False
    email.status, email.status_reason = Status.SENDING, ""
    email.attempts += 1
    email.lease_expires_at = lease_until
    email.claimed_by = worker
    email.send_started_at = now
    fresh = not email.message_id
    email.message_id = email.message_id or new_message_id(email=email, mailbox=mailbox)
    email.save(update_fields=_CLAIM_FIELDS)
    return email, fresh


SUPPRESSED = "recipient_suppressed"
_QUEUE = EmailSendQueue._meta.db_table
_QUEUE_FIELDS = list(EmailSendQueue._meta.concrete_fields)
_QUEUE_CONVERTED = [(n, f) for n, f in enumerate(_QUEUE_FIELDS) if hasattr(f, "from_db_value")]
# The PostgreSQL claim in one statement: the same rows as `claimable_emails` (due, campaign
# active, no earlier step unsent), the same order, locked with SKIP LOCKED and updated at once.
_CLAIM_SQL = f"""
    WITH pick AS (
        SELECT q.id, q.message_id AS message_id_before,
            EXISTS (SELECT 1 FROM {Lead._meta.db_table} l WHERE l.id = q.lead_id AND l.status = %(lead_active)s)
            AND NOT EXISTS (
                SELECT 1 FROM {Suppression._meta.db_table} s
                WHERE s.client_id = q.client_id AND s.email = LOWER(q.recipient_email)
            ) AS ok
        FROM {_QUEUE} q JOIN {Campaign._meta.db_table} cp ON cp.id = q.campaign_id
        WHERE q.mailbox_id = %(mailbox)s AND q.status = %(queued)s AND cp.status = %(campaign_active)s
          AND q.next_attempt_at <= %(now)s
          AND NOT EXISTS (
              SELECT 1 FROM {_QUEUE} e
              WHERE e.lead_id = q.lead_id AND e.campaign_id = q.campaign_id
                AND e.sequence_number < q.sequence_number AND e.status = ANY(%(unsent)s)
          )
        ORDER BY q.next_attempt_at, q.sequence_number, q.created_at
        LIMIT 1
        FOR UPDATE OF q SKIP LOCKED
    )
    UPDATE {_QUEUE} AS q SET
        status = CASE WHEN pick.ok THEN %(sending)s ELSE %(cancelled)s END,
        status_reason = CASE WHEN pick.ok THEN '' ELSE %(suppressed)s END,
        attempts = q.attempts + CASE WHEN pick.ok THEN 1 ELSE 0 END,
        lease_expires_at = CASE WHEN pick.ok THEN %(lease_until)s ELSE q.lease_expires_at END,
        claimed_by = CASE WHEN pick.ok THEN %(worker)s ELSE q.claimed_by END,
        send_started_at = CASE WHEN pick.ok THEN %(now)s ELSE q.send_started_at END,
        message_id = CASE WHEN pick.ok AND q.message_id = ''
            THEN '<' || replace(q.id::text, '-', '') || %(message_id_suffix)s ELSE q.message_id END,
        updated_at = %(now)s
    FROM pick
    WHERE q.id = pick.id
    RETURNING {", ".join(f"q.{field.column}" for field in _QUEUE_FIELDS)}, pick.message_id_before = ''
"""  # noqa: S608 - table and column names come from model metadata; every value is a parameter


def _claim_due_row_postgresql(
    *, mailbox: Mailbox, worker: str, now: datetime, lease_until: datetime
) -> tuple[EmailSendQueue, bool] | None:
    params: dict[str, Any] = {
        "mailbox": mailbox.pk,
        "now": now,
        "lead_active": Lead.Status.ACTIVE.value,
        "queued": Status.QUEUED.value,
        "campaign_active": Campaign.Status.ACTIVE.value,
        "unsent": [status.value for status in UNSENT_BEFORE_STEP],
        "sending": Status.SENDING.value,
        "cancelled": Status.CANCELLED.value,
        "suppressed": SUPPRESSED,
        "lease_until": lease_until,
        "worker": worker,
        "message_id_suffix": message_id_suffix(mailbox),
    }
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row[: len(_QUEUE_FIELDS)])
    for n, field in _QUEUE_CONVERTED:
        values[n] = field.from_db_value(values[n], None, connection)
    email = EmailSendQueue.from_db(connection.alias, [field.attname for field in _QUEUE_FIELDS], values)
    return email, bool(row[-1]) and email.status == Status.SENDING


def _mailbox_free_at(mailbox: Mailbox, client: Client, now: datetime) -> datetime:
    """The soonest the pacing statement could grant this mailbox a slot, from the values we loaded."""
    if pacing.remaining_today(mailbox=mailbox, client=client, now=now) <= 0:
        return next_local_midnight(client, now)
    return max(t for t in (now, mailbox.next_send_at, mailbox.cooldown_until) if t is not None)


def _next_due(mailbox: Mailbox, *, earliest: datetime, now: datetime) -> datetime | None:
    """When the mailbox's next turn should run: the first claimable row's time, not before `earliest`.

    None when nothing is claimable within the turn horizon; the beat dispatcher brings it back later.
    """
    first = claimable_emails(mailbox_id=mailbox.pk, now=None).aggregate(first=Min("next_attempt_at"))["first"]
    if first is None:
        return None
    at = max(earliest, first)
    if at <= now:
        at = now + timedelta(seconds=1)  # claimable now but locked by a concurrent claim: look again soon
    return at if at - now <= TURN_HORIZON else None


# =========================================================================== sending


def send_claimed_email(*, claim: Claim, now: datetime | None = None) -> str:
    """Send the claimed row through Gmail once and record what happened; returns the outcome's name."""

    email, mailbox = claim.email, claim.mailbox
    try:
        built = build_message(email=email, mailbox=mailbox, now=now, fresh=claim.fresh)
        client = gmail_for(mailbox)
    except TokenDecryptionError as error:
        return _mailbox_unusable(claim, error)
    except Exception as error:
        # Nothing left: our own bug or bad data. Retry with backoff so it surfaces, never silently.
        logger.exception("could not build queued email %s", email.pk)
        return _retry_later(claim, f"could not build the message ({type(error).__name__})")
    note = ""
    try:
        try:
            sent = client.send_raw(built.raw, thread_id=built.thread_id)
        except g.NotFound:
            if not built.thread_id:
                raise
            # The previous step's Gmail thread is gone (deleted in the mailbox): Gmail refused the
            # send, so nothing left. Send it once more as a new thread in the sender's mailbox; its
            # In-Reply-To/References still thread it under the earlier email at the recipient's.
            logger.info(
                "thread %s of queued email %s no longer exists; sending in a new thread", built.thread_id, email.pk
            )
            note = THREAD_MISSING
            built = dataclasses.replace(built, thread_id=None)
            sent = client.send_raw(built.raw, thread_id=None)
    except g.RateLimited as error:
        until = error.retry_at or timezone.now() + timedelta(seconds=RATE_LIMIT_DEFAULT_SECONDS)
        pacing.cool_down(mailbox=mailbox, until=until, reason=str(error))
        return _requeue_not_sent(claim, at=until, reason="rate_limited", error=str(error))
    except g.DailyLimitExceeded as error:
        lifts_at = pacing.mark_daily_limit_reached(mailbox=mailbox, client=claim.client, reason=str(error))
        return _requeue_not_sent(claim, at=lifts_at, reason="mailbox_daily_limit", error=str(error))
    except (g.AuthorizationRevoked, g.InsufficientPermissions) as error:
        forget_gmail_client(mailbox)
        return _mailbox_unusable(claim, error)
    except g.InvalidMessage as error:
        return _fail(claim, reason="rejected_by_gmail", error=error.reason or str(error), give_back_slot=True)
    except g.OutcomeUnknown as error:
        return _mark_unknown(claim, str(error))
    except g.GmailUnavailable as error:
        if error.may_have_reached_google:
            return _mark_unknown(claim, str(error))
        pacing.release_send_slot(reservation=claim.reservation)
        return _retry_later(claim, str(error))
    except g.GmailError as error:
        # An answer we do not map (e.g. an unexpected 4xx): Gmail refused it, so it did not go out.
        pacing.release_send_slot(reservation=claim.reservation)
        return _retry_later(claim, str(error))
    except Exception as error:
        # A failure of ours after the request may have left: treat as unknown, never resend blindly.
        logger.exception("unexpected error while sending queued email %s", email.pk)
        return _mark_unknown(claim, f"unexpected error during the send ({type(error).__name__})")
    record_sent(email=email, sent=sent, built=built, mailbox=mailbox, client=claim.client, note=note)
    return "sent"


def record_sent(
    *,
    email: EmailSendQueue,
    sent: SentMessage,
    built: BuiltMessage | None,
    mailbox: Mailbox,
    client: Client,
    sent_at: datetime | None = None,
    note: str = "",
) -> bool:
    """Record an accepted send: the row first, then its event and rollups. False if already recorded.

    `note` is kept as the sent row's `status_reason` and in the event (e.g. THREAD_MISSING).
    """
    sent_at = sent_at or timezone.now()
    fields: dict[str, Any] = {
        "status": Status.SENT,
        "status_reason": note,
        "sent_at": sent_at,
        "gmail_message_id": sent.gmail_id,
        "gmail_thread_id": sent.thread_id,
        "rfc_message_id": sent.rfc822_message_id or email.message_id,
        "lease_expires_at": None,
        "last_error": "",
        "updated_at": sent_at,
    }
    if built is not None:
        fields.update(subject=built.subject[:998], in_reply_to=built.in_reply_to, references=built.references)
    event: dict[str, Any] = {
        "message": email,
        "event_type": EmailEvent.Type.SENT,
        "occurred_at": sent_at,
        "tz_name": client.timezone,
        "dedupe_key": f"sent:{email.pk}",
        "detail": {"gmail_message_id": sent.gmail_id, "gmail_thread_id": sent.thread_id}
        | ({"note": note} if note else {}),
    }
    if connection.vendor == "postgresql":
        recorded = _record_sent_postgresql(email=email, fields=fields, mailbox=mailbox, event=event)
    else:
        recorded = _record_sent_portable(email=email, fields=fields, mailbox=mailbox, event=event)
    if recorded:
        for name, value in fields.items():
            setattr(email, name, value)
    return recorded


def _record_sent_portable(
    *, email: EmailSendQueue, fields: dict[str, Any], mailbox: Mailbox, event: dict[str, Any]
) -> bool:
    with transaction.atomic():
        # Not guarded by the claimant: the message went out, whoever learns it records it.
        if not EmailSendQueue.objects.filter(pk=email.pk).exclude(status=Status.SENT).update(**fields):
            return False
        record_event(**event)
        if mailbox.last_error:
            Mailbox.objects.filter(pk=mailbox.pk).update(last_error="", last_error_at=None)
    return True


def _record_sent_postgresql(
    *, email: EmailSendQueue, fields: dict[str, Any], mailbox: Mailbox, event: dict[str, Any]
) -> bool:
    """The portable version's row, event, rollups and mailbox error reset, as one statement."""
    meta, quote = EmailSendQueue._meta, connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    assert all(isinstance(column, models.Field) for column in columns)
    sets = ", ".join(f"{quote(str(column.column))} = %s" for column in columns)  # type: ignore[union-attr]
    values = [column.get_db_prep_save(fields[column.name], connection) for column in columns]  # type: ignore[union-attr]
    # Not guarded by the claimant: the message went out, whoever learns it records it.
    update = f"UPDATE {quote(meta.db_table)} SET {sets} WHERE id = %s AND status <> %s RETURNING 1"  # noqa: S608 - names from model metadata
    also = []
    if mailbox.last_error:
        table = quote(Mailbox._meta.db_table)
        also.append((f"UPDATE {table} SET last_error = '', last_error_at = NULL WHERE id = %s", [mailbox.pk]))  # noqa: S608
    return record_event_after_update(update=(update, [*values, email.pk, Status.SENT.value]), also=also, **event)


def _guarded(claim: Claim) -> Any:
    return EmailSendQueue.objects.filter(pk=claim.email.pk, status=Status.SENDING, claimed_by=claim.worker)


def _requeue_not_sent(claim: Claim, *, at: datetime, reason: str, error: str) -> str:
    """Gmail refused for a reason that is not the email's fault: back to the queue, attempt not counted."""
    pacing.release_send_slot(reservation=claim.reservation)
    _guarded(claim).update(
        status=Status.QUEUED,
        status_reason=reason,
        next_attempt_at=at,
        attempts=max(0, claim.email.attempts - 1),
        lease_expires_at=None,
        last_error=error[:2000],
        updated_at=timezone.now(),
    )
    return reason


def _mailbox_unusable(claim: Claim, error: Exception) -> str:
    """Authorisation revoked: disconnect the mailbox, hold its emails (this one included), fail none."""
    pacing.release_send_slot(reservation=claim.reservation)
    with transaction.atomic():
        _guarded(claim).update(
            status=Status.QUEUED,
            attempts=max(0, claim.email.attempts - 1),
            lease_expires_at=None,
            last_error=str(error)[:2000],
            updated_at=timezone.now(),
        )
        _disconnect(claim.mailbox, error)
    return "mailbox_disconnected"


def _disconnect(mailbox: Mailbox, error: Exception) -> None:
    if isinstance(error, g.GmailError):
        mailbox_authorization_revoked(mailbox=mailbox, error=error)
    else:  # our stored tokens cannot be read: the mailbox must be reconnected just the same
        disconnect_mailbox(mailbox=mailbox, reason=f"stored tokens unreadable, reconnect the mailbox: {error}"[:255])


def _retry_later(claim: Claim, error: str) -> str:
    """A transient failure of this attempt: back off, or fail for good after MAX_SEND_ATTEMPTS."""
    if claim.email.attempts >= MAX_SEND_ATTEMPTS:
        return _fail(claim, reason="too_many_attempts", error=error, give_back_slot=False)
    _guarded(claim).update(
        status=Status.QUEUED,
        status_reason="retrying",
        next_attempt_at=timezone.now() + backoff_delay(claim.email.attempts),
        lease_expires_at=None,
        last_error=error[:2000],
        updated_at=timezone.now(),
    )
    return "retrying"


def _fail(claim: Claim, *, reason: str, error: str, give_back_slot: bool) -> str:
    if give_back_slot:
        pacing.release_send_slot(reservation=claim.reservation)
    return fail_email(email=claim.email, client=claim.client, worker=claim.worker, reason=reason, error=error)


def fail_email(*, email: EmailSendQueue, client: Client, worker: str, reason: str, error: str) -> str:
    """`sending` → `failed` (if this worker still holds the row) with the reason and a `failed` event."""
    now = timezone.now()
    with transaction.atomic():
        if EmailSendQueue.objects.filter(pk=email.pk, status=Status.SENDING, claimed_by=worker).update(
            status=Status.FAILED, status_reason=reason, lease_expires_at=None, last_error=error[:2000], updated_at=now
        ):
            email.status, email.status_reason, email.last_error = Status.FAILED, reason, error[:2000]
            record_event(
                message=email,
                event_type=EmailEvent.Type.FAILED,
                occurred_at=now,
                tz_name=client.timezone,
                dedupe_key=f"failed:{email.pk}:{email.attempts}",
                detail={"reason": reason, "error": error[:500]},
            )
    return "failed"


def _mark_unknown(claim: Claim, error: str) -> str:
    """The send may have gone out: keep the row `sending` until the mailbox tells us (resolve_email)."""
    resolve_at = timezone.now() + unknown_resolve_delay()
    _guarded(claim).update(
        status_reason=REASON_UNKNOWN, lease_expires_at=resolve_at, last_error=error[:2000], updated_at=timezone.now()
    )
    _schedule_resolution(claim.email.pk, at=resolve_at)
    return REASON_UNKNOWN


# =========================================================================== resolving the unknown


def find_in_mailbox(*, gmail: GmailClient, email: EmailSendQueue) -> SentMessage | None:
    """The sent message of this row, by our Message-ID, else by the queue-id header to that recipient."""
    if email.message_id:
        found = gmail.find_sent_by_message_id(email.message_id)
        if found is not None:
            return found
    return gmail.find_sent_by_header(email.recipient_email, QUEUE_ID_HEADER, str(email.pk))


def resolve_email(*, email_id: uuid.UUID | str, now: datetime | None = None) -> str:
    """Settle a `sending` row whose lease ran out: sent (found in the mailbox) or back to the queue.

    Takes the row over with a conditional update first, so two sweepers never both resolve it.
    """

    now = now or timezone.now()
    worker = f"resolver:{worker_name()}"
    taken = EmailSendQueue.objects.filter(pk=email_id, status=Status.SENDING, lease_expires_at__lte=now).update(
        claimed_by=worker, lease_expires_at=now + timedelta(seconds=lease_seconds()), updated_at=now
    )
    if not taken:
        return "not_due"
    email = EmailSendQueue.objects.select_related("mailbox", "client").get(pk=email_id)
    mailbox, client = email.mailbox, email.client
    guarded = EmailSendQueue.objects.filter(pk=email.pk, status=Status.SENDING, claimed_by=worker)
    if mailbox is None or mailbox.status not in SENDING_MAILBOX_STATUSES:
        # Cannot ask a disconnected mailbox; keep the row unsettled (and say why) until it is back.
        guarded.update(
            status_reason="outcome_unknown_mailbox_unavailable",
            lease_expires_at=now + timedelta(seconds=max(lease_seconds(), 300)),
        )
        return "waiting_for_mailbox"
    try:
        found = find_in_mailbox(gmail=gmail_for(mailbox), email=email)
    except (g.AuthorizationRevoked, g.InsufficientPermissions, TokenDecryptionError) as error:
        _disconnect(mailbox, error)
        guarded.update(status_reason="outcome_unknown_mailbox_unavailable", last_error=str(error)[:2000])
        return "waiting_for_mailbox"
    except g.GmailError as error:
        guarded.update(
            status_reason=REASON_UNKNOWN,
            lease_expires_at=now + backoff_delay(1),
            last_error=f"lookup failed: {error}"[:2000],
        )
        return REASON_UNKNOWN
    if found is not None:
        record_sent(email=email, sent=found, built=None, mailbox=mailbox, client=client, sent_at=email.send_started_at)
        return "sent"
    # Not in the mailbox: it never left. Count the attempt and queue it again (same Message-ID).
    if email.attempts >= MAX_SEND_ATTEMPTS:
        last = email.last_error or "outcome unknown"
        return fail_email(email=email, client=client, worker=worker, reason="too_many_attempts", error=last)
    guarded.update(
        status=Status.QUEUED,
        status_reason="retrying",
        next_attempt_at=now + backoff_delay(email.attempts),
        lease_expires_at=None,
        updated_at=now,
    )
    return "requeued"


# =========================================================================== scheduling


_LOOP_KEY = "oree:send-turn:{}"
_NUDGE_KEY = "oree:dispatch-nudge"
_REST = "rest"
# A scheduled turn task must have started this long after its time, or it is taken to be lost
# with its worker (a SIGKILLed worker takes the turn tasks it had prefetched along): the
# dispatcher then starts the mailbox again, without waiting for the key's TTL.
TURN_START_GRACE_SECONDS = 15.0


def nudge_dispatcher() -> None:
    """Ask for a dispatch soon; many nudges within a second make one dispatch."""
    if cache.add(_NUDGE_KEY, 1, timeout=1):
        from email_service.tasks import dispatch_due_task

        dispatch_due_task.apply_async(countdown=0.2)


def turn_budget_seconds() -> float:
    """How long one turn task keeps serving its mailboxes before handing them to a fresh task.

    Claims are made only inside the budget, each under its own lease, and the task's hard time
    limit stays under the lease (tasks.py), so a live turn never loses a row to the sweep. An
    eighth of the lease keeps a turn's last send (up to the Gmail HTTP timeout) inside the soft limit.
    """
    return min(TURN_BUDGET_SECONDS, lease_seconds() / 8)


def turn_group_size(due: int) -> int:
    """Mailboxes per turn task: one each while few are due, up to TURN_GROUP_MAX when many are.

    A task serves its group one send at a time, so a send that hangs delays its groupmates (never
    beyond the Gmail HTTP timeout); small groups keep that rare cost small, large queues get the
    fewer Celery round trips per email that grouping buys.
    """
    return max(1, min(TURN_GROUP_MAX, -(-due // TURN_TASKS_TARGET)))


def schedule_turn(*, mailbox_id: uuid.UUID | str, at: datetime | None, force: bool = False) -> bool:
    """Make sure the mailbox has a turn scheduled at `at`; False when one is already pending."""
    if at is None:
        cache.delete(_LOOP_KEY.format(mailbox_id))
        return False
    return bool(schedule_turns(mailbox_ids=[mailbox_id], at=at, force=force))


def _turn_mark(chain: str, alive_until: float) -> str:
    return f"{chain} {alive_until:.3f}"


def _parse_turn_mark(value: object) -> tuple[str, float] | None:
    """(chain, alive-until as a Unix time) of a turn key's value; None for "rest" or anything else."""
    if not isinstance(value, str) or " " not in value:
        return None
    chain, _, until = value.partition(" ")
    try:
        return chain, float(until)
    except ValueError:
        return None


def schedule_turns(
    *, mailbox_ids: Sequence[uuid.UUID | str], at: datetime, force: bool = False, chain: str | None = None
) -> int:
    """One turn task at `at` for those of the mailboxes without a pending turn (all with `force`).

    The per-mailbox key says which *chain* of turn tasks serves the mailbox and until when that
    chain must show it is alive (its next task's start, plus TURN_START_GRACE_SECONDS). A task
    whose chain no longer owns a mailbox drops it (run_turns), so a mailbox the dispatcher took
    over is never served by two chains for long. The key also expires by itself (the TTL).
    """
    from email_service.tasks import send_turns_task

    delay = max(0.0, (at - timezone.now()).total_seconds())
    ttl = int(delay + turn_budget_seconds()) + 60
    chain = chain or uuid.uuid4().hex[:16]
    mark = _turn_mark(chain, time.time() + delay + TURN_START_GRACE_SECONDS)
    taken: list[str] = []
    for mailbox_id in mailbox_ids:
        key = _LOOP_KEY.format(mailbox_id)
        if force:
            cache.set(key, mark, timeout=ttl)
        elif not cache.add(key, mark, timeout=ttl):
            continue
        taken.append(str(mailbox_id))
    if taken:
        send_turns_task.apply_async((taken, chain), countdown=delay)
    return len(taken)


def _claim_chain(mailbox_ids: Sequence[uuid.UUID | str], chain: str, budget: float) -> list[str]:
    """The mailboxes this chain still owns, marked alive for this task's budget; the rest are dropped."""
    keys = {str(m): _LOOP_KEY.format(m) for m in mailbox_ids}
    marks = cache.get_many(list(keys.values()))
    owned = [m for m, key in keys.items() if (_parse_turn_mark(marks.get(key)) or ("",))[0] == chain]
    if owned:
        # Its last claim comes before the budget ends; that send may take up to the HTTP timeout.
        running_for = budget + float(settings.GMAIL_HTTP_TIMEOUT)
        alive = _turn_mark(chain, time.time() + running_for + TURN_START_GRACE_SECONDS)
        cache.set_many({keys[m]: alive for m in owned}, timeout=int(running_for) + 60)
    return owned


def rest_turns(*, mailbox_id: uuid.UUID | str, until: datetime) -> None:
    """No turn for the mailbox before `until` (its next local midnight when at its daily cap).

    The turn key is held until then, so neither the dispatcher's beat nor a nudge starts a turn
    that the pacing statement would only refuse. A Celery countdown that long is not used: Redis
    redelivers messages whose ETA lies beyond its visibility timeout.
    """
    seconds = int((until - timezone.now()).total_seconds()) + 1
    if seconds > 0:
        cache.set(_LOOP_KEY.format(mailbox_id), _REST, timeout=seconds)


def _schedule_resolution(email_id: uuid.UUID | str, *, at: datetime) -> None:
    from email_service.tasks import resolve_email_task

    delay = max(0.0, (at - timezone.now()).total_seconds()) + 1
    transaction.on_commit(lambda: resolve_email_task.apply_async((str(email_id),), countdown=delay))


def run_mailbox_turn(*, mailbox_id: uuid.UUID | str) -> str:
    """One turn: claim, schedule the next turn, then send (so a slow send never delays the pace)."""
    turn = claim_next_email(mailbox_id=mailbox_id, worker=worker_name())
    if turn.rest_until is not None:
        rest_turns(mailbox_id=mailbox_id, until=turn.rest_until)
    else:
        schedule_turn(mailbox_id=mailbox_id, at=turn.next_turn_at, force=True)
    if turn.claim is None:
        return turn.skipped
    return send_claimed_email(claim=turn.claim)


def run_turns(
    *,
    mailbox_ids: Sequence[uuid.UUID | str],
    chain: str | None = None,
    budget_seconds: float | None = None,
    sleep: Any = time.sleep,
) -> dict[str, int]:
    """Serve the mailboxes' turns in one task: each slot as soon as its pace allows, within a budget.

    Every send still goes through `claim_next_email` (the atomic pacing statement, then the
    `SKIP LOCKED` claim under a lease), so pace, cap and exactly-once hold across processes as for
    single turns; this only saves the Celery task, acknowledgement and next-turn message per email.
    Mailboxes with nothing due leave the group (the dispatcher brings them back); at the end of the
    budget the rest go on as one new turn task at the soonest of their next slots.
    """
    budget = turn_budget_seconds() if budget_seconds is None else budget_seconds
    worker = worker_name()
    outcomes: Counter[str] = Counter()
    if chain is not None:  # tasks published before chains existed carry none: they serve all
        owned = _claim_chain(mailbox_ids, chain, budget)
        if len(owned) < len(mailbox_ids):
            outcomes["taken_over"] += len(mailbox_ids) - len(owned)
        mailbox_ids = owned
    started = time.monotonic()
    deadline = started + budget
    # (when, order, mailbox id) on this process's monotonic clock; order keeps the heap stable.
    pending: list[tuple[float, int, str]] = [(started, n, str(m)) for n, m in enumerate(mailbox_ids)]
    heapq.heapify(pending)
    later: dict[str, datetime] = {}
    # Each mailbox and its client as its last successful turn left them (see claim_next_email).
    loaded: dict[str, tuple[Mailbox, Client]] = {}
    while pending:
        when, order, mailbox_id = pending[0]
        if when > deadline:
            break
        heapq.heappop(pending)
        wait = when - time.monotonic()
        if wait > 0:
            sleep(wait)
        turn = claim_next_email(mailbox_id=mailbox_id, worker=worker, loaded=loaded.pop(mailbox_id, None))
        if turn.claim is not None:
            outcomes[send_claimed_email(claim=turn.claim)] += 1
            loaded[mailbox_id] = (turn.claim.mailbox, turn.claim.client)
        else:
            outcomes[turn.skipped] += 1
        if turn.rest_until is not None:
            rest_turns(mailbox_id=mailbox_id, until=turn.rest_until)
        elif turn.next_turn_at is None:
            cache.delete(_LOOP_KEY.format(mailbox_id))
        else:
            due_in = (turn.next_turn_at - timezone.now()).total_seconds()
            heapq.heappush(pending, (time.monotonic() + max(0.0, due_in), order, mailbox_id))
            later[mailbox_id] = turn.next_turn_at
    if pending:
        remaining = [mailbox_id for _when, _order, mailbox_id in sorted(pending)]
        at = min((later[m] for m in remaining if m in later), default=timezone.now())
        schedule_turns(mailbox_ids=remaining, at=at, force=True, chain=chain)
    return dict(outcomes)


def due_mailbox_ids(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Mailboxes that are sending and have a queued row due now."""
    now = now or timezone.now()
    return list(
        EmailSendQueue.objects.filter(
            status=Status.QUEUED, next_attempt_at__lte=now, mailbox__status__in=SENDING_MAILBOX_STATUSES
        )
        .values_list("mailbox_id", flat=True)
        .distinct()
    )


def dispatch_due(*, now: datetime | None = None) -> int:
    """Start a turn for every mailbox with due work that has none pending; returns mailboxes started.

    A mailbox whose turn chain has not shown itself alive in time (its task was lost with a
    killed worker) counts as having none: it is taken over by a new chain. Mailboxes are grouped
    into turn tasks (see `turn_group_size`).
    """
    now = now or timezone.now()
    due = due_mailbox_ids(now=now)
    marks = cache.get_many([_LOOP_KEY.format(m) for m in due])
    lost: list[uuid.UUID] = []
    for mailbox_id in due:
        mark = _parse_turn_mark(marks.get(_LOOP_KEY.format(mailbox_id)))
        if mark is not None and mark[1] < now.timestamp():
            lost.append(mailbox_id)
    if lost:
        logger.info("taking over %d mailboxes whose turn task did not start in time", len(lost))
    size = turn_group_size(len(due))
    started = sum(schedule_turns(mailbox_ids=lost[i : i + size], at=now, force=True) for i in range(0, len(lost), size))
    taken_over = set(lost)
    fresh = [m for m in due if m not in taken_over]
    return started + sum(schedule_turns(mailbox_ids=fresh[i : i + size], at=now) for i in range(0, len(fresh), size))


# =========================================================================== the sweep


def expired_leases(*, now: datetime | None = None, limit: int = 200) -> list[uuid.UUID]:
    now = now or timezone.now()
    return list(
        EmailSendQueue.objects.filter(status=Status.SENDING, lease_expires_at__lte=now).values_list("pk", flat=True)[
            :limit
        ]
    )


def rehome_stranded_emails(*, now: datetime | None = None, limit: int = 500) -> int:
    """Re-apply the sticky-mailbox rules to held rows and to queued rows whose mailbox stopped sending.

    A lead with nothing sent moves to another usable mailbox; a lead mid-sequence waits (held,
    `waiting_for_mailbox`); a held row whose mailbox is back is queued again.
    """
    now = now or timezone.now()
    stranded = (
        EmailSendQueue.objects.filter(
            Q(status=Status.HELD)
            | Q(status=Status.QUEUED, mailbox__isnull=True)
            | Q(status=Status.QUEUED, mailbox__status__in=[Mailbox.Status.PAUSED, Mailbox.Status.DISCONNECTED])
        )
        .values_list("lead_id", flat=True)
        .distinct()[:limit]
    )
    changed = 0
    for lead_id in list(stranded):
        with transaction.atomic():
            lead = Lead.objects.select_related("client").select_for_update(of=("self",)).get(pk=lead_id)
            choice = mailbox_for_lead(lead=lead, client=lead.client, now=now)
            rows = EmailSendQueue.objects.filter(lead=lead, status__in=[Status.QUEUED, Status.HELD])
            if choice.hold_reason:
                changed += rows.exclude(status=Status.HELD, status_reason=choice.hold_reason).update(
                    status=Status.HELD, status_reason=choice.hold_reason, updated_at=now
                )
                continue
            due = scheduled_for(client=lead.client, not_before=now)
            if due is None:
                continue
            for row in rows.filter(status=Status.HELD):
                changed += EmailSendQueue.objects.filter(pk=row.pk, status=Status.HELD).update(
                    status=Status.QUEUED,
                    status_reason="",
                    mailbox=choice.mailbox,
                    next_attempt_at=max(due, row.next_attempt_at),
                    updated_at=now,
                )
            rows.filter(status=Status.QUEUED).exclude(mailbox=choice.mailbox).update(mailbox=choice.mailbox)
    return changed


def sweep_queue(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic safety net: resolve expired leases, re-home stranded rows, restart lost turns."""
    now = now or timezone.now()
    resolved = 0
    for email_id in expired_leases(now=now):
        if resolve_email(email_id=email_id, now=now) != "not_due":
            resolved += 1
    rehomed = rehome_stranded_emails(now=now)
    started = dispatch_due(now=now)
    return {"resolved": resolved, "rehomed": rehomed, "turns_started": started}
