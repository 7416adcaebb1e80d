"""/api/health: 200 when database, Redis, broker, worker and beat are up; 503 when one is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from email_service.operations.health import record_heartbeat

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_web_check_stays_200_while_workers_and_beat_are_gone_but_reports_them(api):
    response = api.get("/api/health/web")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["components"]["worker"]["ok"] is False
    assert body["components"]["beat"]["ok"] is False
    assert api.get("/api/health").status_code == 503


def test_the_web_check_is_503_when_the_database_is_unreachable():
    # A process of its own whose database is a closed port: the request's own database cannot die mid-test.
    script = (
        "import django, json; django.setup(); from django.test import Client; "
        "r = Client().get('/api/health/web', HTTP_HOST='localhost'); "
        "print(r.status_code, json.dumps(r.json()['components']['database']))"
    )
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/gone",
        "DJANGO_SETTINGS_MODULE": "OreeStats.settings_test",
    }
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status, database = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert json.loads(database)["ok"] is False


def test_an_unhealthy_answer_is_logged_as_a_warning_not_an_error(api, caplog):
    with caplog.at_level("INFO", logger="django.request"):
        assert api.get("/api/health").status_code == 503
    levels = [record.levelname for record in caplog.records if record.name == "django.request"]
    assert levels == ["WARNING"]
