"""Celery configuration: JSON only, time limits, and the periodic tasks registered for beat."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from email_service.models import ClientSession, OAuthState, ServiceHeartbeat
from email_service.operations.housekeeping import purge_expired
from OreeStats.celery import app


def test_tasks_travel_as_json_only():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_time_limit and app.conf.task_soft_time_limit
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


def test_every_periodic_task_names_a_registered_task():
    app.loader.import_default_modules()
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, name


@pytest.mark.django_db(transaction=True)
def test_beat_installs_the_periodic_tasks_in_the_database():
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    DatabaseScheduler(app=app, lazy=True).setup_schedule()
    installed = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {entry["task"] for entry in app.conf.beat_schedule.values()} <= installed


@pytest.mark.django_db
def test_purge_removes_only_what_expired_more_than_a_day_ago(alice):
    now = timezone.now()
    old = ClientSession.objects.create(client=alice, expires_at=now - timedelta(days=2))
    recent = ClientSession.objects.create(client=alice, expires_at=now - timedelta(hours=1))
    OAuthState.objects.create(
        nonce="a" * 30,
        client=alice,
        code_verifier_encrypted="x",
        initiated_by="client",
        expires_at=now - timedelta(days=3),
    )
    ServiceHeartbeat.objects.create(name="worker@gone:1", kind="worker", last_seen=now - timedelta(days=30))
    counts = purge_expired(now=now)
    assert counts == {"sessions": 1, "oauth_states": 1, "heartbeats": 1}
    assert not ClientSession.objects.filter(pk=old.pk).exists()
    assert ClientSession.objects.filter(pk=recent.pk).exists()
