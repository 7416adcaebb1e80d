"""Tracking fixtures: a sent message of Alice's, a clean hit buffer, and a browser's request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client as DjangoClient
from django.utils import timezone

from email_service.models import EmailClickTracking, EmailSendQueue, EmailTrackingPixel
from email_service.tracking import hits as tracking
from tests.factories import EmailSendQueueFactory, LeadFactory

SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.fixture(autouse=True)
def clean_hit_buffer():
    client = tracking._redis()
    if client is not None:
        keys = list(client.scan_iter(match=tracking._key("*")))
        if keys:
            client.delete(*keys)
    yield


@pytest.fixture
def browser() -> DjangoClient:
    """A recipient's mail client: no cookies, a real user agent, enforce CSRF like production."""
    return DjangoClient(enforce_csrf_checks=True, HTTP_USER_AGENT=SAFARI)


def drain() -> tracking.DrainResult:
    """Record everything buffered so far (no settling delay: every click of a burst is already in)."""
    return tracking.drain_tracking_events(settle_seconds=0)


def sent_message(client, *, sequence_number: int = 1, lead=None, hours_ago: float = 1.0, **fields):
    lead = lead or LeadFactory(client=client)
    return EmailSendQueueFactory(
        client=client,
        lead=lead,
        sequence_number=sequence_number,
        status=EmailSendQueue.Status.SENT,
        sent_at=timezone.now() - timedelta(hours=hours_ago),
        **fields,
    )


@pytest.fixture
def message(alice):
    return sent_message(alice)


@pytest.fixture
def pixel(message):
    return EmailTrackingPixel.objects.create(message=message)


DESTINATION = "https://example.com/pricing?plan=pro&ref=mail#annual"


@pytest.fixture
def cached_link(message):
    """A tracked link of `message`, in the click cache as the send would have put it."""
    created = EmailClickTracking.objects.create(message=message, url=DESTINATION)
    tracking.cache_links([created])
    return created


@pytest.fixture
def cutting_redis() -> Iterator[Callable[[bytes], str]]:
    """`cutting_redis(b"XADD")`: a Redis URL through a proxy that passes every command on, but closes
    the connection instead of passing on Redis's answer to a write holding that command."""
    upstream = urlsplit(str(settings.REDIS_URL))
    servers: list[socket.socket] = []

    def relay(client: socket.socket, command: bytes) -> None:
        with client, socket.create_connection((str(upstream.hostname), upstream.port or 6379)) as redis_side:
            while data := client.recv(65536):
                redis_side.sendall(data)
                answer = redis_side.recv(65536)
                if command in data:
                    return  # Redis did it; its answer goes nowhere
                client.sendall(answer)

    def serve(server: socket.socket, command: bytes) -> None:
        with server:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                threading.Thread(target=relay, args=(client, command), daemon=True).start()

    def proxy(command: bytes) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)
        threading.Thread(target=serve, args=(server, command), daemon=True).start()
        return f"redis://127.0.0.1:{server.getsockname()[1]}{upstream.path}"

    yield proxy
    for server in servers:
        server.close()


@pytest.fixture
def lossy_redis(cutting_redis: Callable[[bytes], str]) -> str:
    """A Redis that takes each `XADD` but whose answer never arrives."""
    return cutting_redis(b"XADD")
