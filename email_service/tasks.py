"""Celery tasks: thin adapters that take ids, call one service, and treat a missing row as done."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from email_service.operations.housekeeping import purge_expired


@shared_task(name="email_service.purge_expired")
def purge_expired_task() -> dict[str, int]:
    return purge_expired()


@shared_task(name="email_service.drain_tracking_events", ignore_result=True)
def drain_tracking_events_task() -> dict[str, int]:
    from email_service.tracking.hits import drain_tracking_events

    result = drain_tracking_events()
    return {"read": result.read, "recorded": result.recorded, "unknown": result.unknown}


@shared_task(name="email_service.poll_replies", ignore_result=True)
def poll_replies_task() -> int:
    """Fan out: one poll task per connected mailbox."""
    from email_service.inbound.replies import mailboxes_to_poll

    mailbox_ids = mailboxes_to_poll()
    for mailbox_id in mailbox_ids:
        poll_mailbox_task.delay(str(mailbox_id))
    return len(mailbox_ids)


@shared_task(name="email_service.poll_mailbox", ignore_result=True, soft_time_limit=120, time_limit=150)
def poll_mailbox_task(mailbox_id: str) -> dict[str, int] | None:
    import uuid

    from django.core.cache import cache

    from email_service.inbound.replies import poll_mailbox_by_id

    # One poll per mailbox at a time: two would read the same history (harmless, but wasted quota).
    lock_key = f"poll-mailbox:{mailbox_id}"
    if not cache.add(lock_key, "1", timeout=150):
        return None
    try:
        result = poll_mailbox_by_id(mailbox_id=uuid.UUID(mailbox_id))
    finally:
        cache.delete(lock_key)
    if result is None:
        return None
    return {"examined": result.examined, "recorded": result.recorded, "resynced": int(result.resynced)}


@shared_task(name="email_service.dispatch_due")
def dispatch_due_task() -> int:
    """Start a send turn for every mailbox with due work (beat, and nudged after enqueue)."""
    from email_service.sending.dispatch import dispatch_due

    return dispatch_due()


# The hard limit stays under the lease: a live worker never outlasts its claim.
_SEND_HARD_LIMIT = settings.SEND_LEASE_SECONDS - max(5, settings.SEND_LEASE_SECONDS // 5)
_SEND_SOFT_LIMIT = _SEND_HARD_LIMIT - max(3, _SEND_HARD_LIMIT // 10)


@shared_task(
    name="email_service.send_next_for_mailbox",
    time_limit=_SEND_HARD_LIMIT,
    soft_time_limit=_SEND_SOFT_LIMIT,
    acks_late=False,  # the database row, not a redelivered message, recovers a lost turn
)
def send_next_for_mailbox_task(mailbox_id: str) -> str:
    """One mailbox turn: take a pace slot, claim one due email, send it."""
    from email_service.sending.dispatch import run_mailbox_turn

    return run_mailbox_turn(mailbox_id=mailbox_id)


@shared_task(
    name="email_service.send_turns",
    time_limit=_SEND_HARD_LIMIT,
    soft_time_limit=_SEND_SOFT_LIMIT,
    acks_late=False,  # the database row, not a redelivered message, recovers a lost turn
)
def send_turns_task(mailbox_ids: list[str], chain: str | None = None) -> dict[str, int]:
    """Turns of a group of mailboxes: each sends at its pace for a few seconds, then the group goes on."""
    from email_service.sending.dispatch import run_turns

    return run_turns(mailbox_ids=mailbox_ids, chain=chain)


@shared_task(name="email_service.resolve_email", time_limit=_SEND_HARD_LIMIT, soft_time_limit=_SEND_SOFT_LIMIT)
def resolve_email_task(email_id: str) -> str:
    """Settle an email whose send outcome is unknown by asking its mailbox."""
    from email_service.sending.dispatch import resolve_email

    return resolve_email(email_id=email_id)


@shared_task(name="email_service.sweep_queue")
def sweep_queue_task() -> dict[str, int]:
    from email_service.sending.dispatch import sweep_queue

    return sweep_queue()


@shared_task(name="email_service.reset_daily_counts")
def reset_daily_counts_task() -> int:
    from email_service.sending.pacing import reset_daily_counts

    return reset_daily_counts()
