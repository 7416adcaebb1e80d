"""Liveness of the parts OreeStats needs: database, Redis, broker, workers and beat."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from email_service.models import ServiceHeartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 15


@dataclass
class ComponentState:
    ok: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.extra}


def check_database() -> ComponentState:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means "down"; the kind is enough
        return ComponentState(False, f"unreachable ({type(error).__name__})")
    return ComponentState(True, connection.vendor)


def check_redis() -> ComponentState:
    if not settings.REDIS_URL:
        return ComponentState(True, "not configured (serverless mode)")
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
    except redis.RedisError as error:
        return ComponentState(False, f"unreachable ({type(error).__name__})")
    return ComponentState(True, "ping ok")


def check_broker() -> ComponentState:
    # The process's Celery app (the project package creates it and makes it current at import),
    # looked up rather than imported: the app's own signals start this module's heartbeat.
    from celery import current_app

    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            transport = conn.transport_cls
    except Exception as error:  # noqa: BLE001 - kombu raises many kinds; all mean "down"
        return ComponentState(False, f"unreachable ({type(error).__name__})")
    return ComponentState(True, str(transport))


def check_heartbeat(kind: str, *, now: datetime | None = None) -> ComponentState:
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.HEARTBEAT_STALE_SECONDS)
    try:
        latest = ServiceHeartbeat.objects.filter(kind=kind).order_by("-last_seen").first()
        alive = ServiceHeartbeat.objects.filter(kind=kind, last_seen__gte=now - stale_after).count()
    except Exception as error:  # noqa: BLE001 - the database check reports the cause
        return ComponentState(False, f"unknown ({type(error).__name__})")
    if latest is None:
        return ComponentState(False, f"no {kind} has reported")
    extra = {"last_seen": latest.last_seen.isoformat(), "alive": alive}
    if alive == 0:
        return ComponentState(False, f"last {kind} heartbeat is stale", extra)
    return ComponentState(True, f"{alive} alive", extra)


# What each scope must find up. "system": everything an email needs to go out and be counted.
# "web": what a web process needs to serve its routes; a load balancer's health check asks this,
# since restarting web processes cannot bring back a dead worker, and taking them out of rotation
# would stop the pixel, the clicks and the dashboard too. The other parts are still reported.
HEALTH_SCOPES: dict[str, frozenset[str]] = {
    "system": frozenset({"database", "redis", "broker", "worker", "beat"}),
    "web": frozenset({"database"}),
}


def system_health(*, scope: str = "system") -> tuple[bool, dict[str, Any]]:
    required = HEALTH_SCOPES[scope]
    components = {
        "database": check_database(),
        "redis": check_redis(),
        "broker": check_broker(),
        "worker": check_heartbeat("worker"),
        "beat": check_heartbeat("beat"),
    }
    healthy = all(state.ok for name, state in components.items() if name in required)
    return healthy, {name: state.as_dict() for name, state in components.items()}


def record_heartbeat(*, kind: str, name: str, now: datetime | None = None) -> None:
    ServiceHeartbeat.objects.update_or_create(
        name=name, defaults={"kind": kind, "last_seen": now or timezone.now(), "detail": {"pid": os.getpid()}}
    )


def start_heartbeat_thread(kind: str) -> threading.Thread:
    """Report this process alive every few seconds from a daemon thread (worker or beat)."""
    name = f"{kind}@{socket.gethostname()}:{os.getpid()}"
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                close_old_connections()
                record_heartbeat(kind=kind, name=name)
            except Exception:  # a missed heartbeat shows as stale; never kill the process
                logger.warning("Could not record the %s heartbeat", kind, exc_info=True)
            stop.wait(HEARTBEAT_INTERVAL_SECONDS)
        connection.close()

    thread = threading.Thread(target=beat, name=f"oree-{kind}-heartbeat", daemon=True)
    thread.start()
    return thread
