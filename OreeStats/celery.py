"""The Celery application: settings come from Django's CELERY_* settings."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "OreeStats.settings")

app = Celery("OreeStats")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _prepare_filesystem_broker() -> None:
    """kombu's filesystem transport needs its folders to exist before anyone publishes."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = options.get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


app.on_after_configure.connect(lambda sender, **_: _prepare_filesystem_broker(), weak=False)


@signals.worker_ready.connect
def _worker_heartbeat(**_: object) -> None:
    from email_service.operations.health import start_heartbeat_thread

    start_heartbeat_thread("worker")


@signals.beat_init.connect
def _beat_heartbeat(**_: object) -> None:
    from email_service.operations.health import start_heartbeat_thread

    start_heartbeat_thread("beat")


# Periodic tasks, registered by code: django-celery-beat's DatabaseScheduler copies these into
# its tables at start-up, so a fresh deployment has them and operators can see them in the admin.
app.conf.beat_schedule = {
    "purge-expired": {"task": "email_service.purge_expired", "schedule": 3600.0},
    # Opens and clicks wait in a Redis stream; this records them (a few seconds behind the hit).
    "drain-tracking-events": {"task": "email_service.drain_tracking_events", "schedule": 5.0},
    # Replies, auto-replies and bounces from each connected mailbox's Gmail history.
    "poll-replies": {"task": "email_service.poll_replies", "schedule": 60.0},
    # Restarts send turns whose nudge was lost; turns themselves chain at each mailbox's pace.
    "dispatch-due": {"task": "email_service.dispatch_due", "schedule": 5.0},
    # Expired leases (dead workers), stranded rows of paused/disconnected mailboxes, lost turns.
    "sweep-queue": {"task": "email_service.sweep_queue", "schedule": 30.0},
    # Clients' midnights fall on quarter hours in UTC; the pacing statement needs no reset to be right.
    "reset-daily-counts": {"task": "email_service.reset_daily_counts", "schedule": 900.0},
}


@signals.setup_logging.connect
def _django_logging(**_: object) -> None:
    """Workers and beat log through Django's LOGGING (its secret-redacting filter included), not Celery's own."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
