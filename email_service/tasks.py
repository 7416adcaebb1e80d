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
