"""Celery tasks: thin adapters that take ids, call one service, and treat a missing row as done."""

from __future__ import annotations

from celery import shared_task

from email_service.services.housekeeping import purge_expired


@shared_task(name="email_service.purge_expired")
def purge_expired_task() -> dict[str, int]:
    return purge_expired()


@shared_task(name="email_service.drain_tracking_events", ignore_result=True)
def drain_tracking_events_task() -> dict[str, int]:
    from email_service.services.tracking import drain_tracking_events

    result = drain_tracking_events()
    return {"read": result.read, "recorded": result.recorded, "unknown": result.unknown}


@shared_task(name="email_service.poll_replies", ignore_result=True)
def poll_replies_task() -> int:
    """Fan out: one poll task per connected mailbox."""
    from email_service.services.replies import mailboxes_to_poll

    mailbox_ids = mailboxes_to_poll()
    for mailbox_id in mailbox_ids:
        poll_mailbox_task.delay(str(mailbox_id))
    return len(mailbox_ids)


@shared_task(name="email_service.poll_mailbox", ignore_result=True, soft_time_limit=120, time_limit=150)
def poll_mailbox_task(mailbox_id: str) -> dict[str, int] | None:
    import uuid

    from django.core.cache import cache

    from email_service.services.replies import poll_mailbox_by_id

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
