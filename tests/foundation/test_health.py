"""/api/health: 200 when database, Redis, broker, worker and beat are up; 503 when one is not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from email_service.services.health import record_heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def live_processes():
    record_heartbeat(kind="worker", name="worker@test:1")
    record_heartbeat(kind="beat", name="beat@test:2")


def test_health_is_200_when_everything_is_up(api, live_processes):
    response = api.get("/api/health")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"database", "redis", "broker", "worker", "beat"}
    assert all(component["ok"] for component in body["components"].values())
    assert response["Cache-Control"] == "no-store"


def test_a_stale_worker_heartbeat_gives_503(api, live_processes):
    record_heartbeat(kind="worker", name="worker@test:1", now=timezone.now() - timedelta(minutes=10))
    response = api.get("/api/health")
    assert response.status_code == 503
    assert response.json()["components"]["worker"]["ok"] is False
    assert response.json()["components"]["beat"]["ok"] is True


def test_no_beat_ever_gives_503(api):
    record_heartbeat(kind="worker", name="worker@test:1")
    response = api.get("/api/health")
    assert response.status_code == 503
    assert response.json()["components"]["beat"]["ok"] is False


def test_a_dead_redis_gives_503(api, live_processes, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = api.get("/api/health")
    assert response.status_code == 503
    assert response.json()["components"]["redis"]["ok"] is False


def test_a_dead_broker_gives_503(api, live_processes, monkeypatch):
    from OreeStats.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = api.get("/api/health")
    assert response.status_code == 503
    assert response.json()["components"]["broker"]["ok"] is False


def test_health_needs_no_credentials_and_ignores_bad_ones(api, live_processes):
    api.credentials(HTTP_AUTHORIZATION="Token nonsense")
    assert api.get("/api/health").status_code == 200
