"""The hit writer: a request queues its hit and answers; one thread per process writes the queue to
Redis in batches, and whatever Redis does not acknowledge is recorded in the database, once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test import override_settings

from email_service.events.recording import record_event
from email_service.models import EmailEvent, EmailSendQueue
from email_service.tracking import hits as tracking
from tests.tracking.conftest import DESTINATION, drain

# The writer thread records through its own database connection: its writes must be committed to be seen.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def threaded(settings):
    settings.TRACKING_FLUSH_MS = 5
    yield
    tracking.flush_hits()


def _buffered() -> int:
    client = tracking._redis()
    assert client is not None
    return int(client.xlen(tracking.stream_key()))


def _eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_hits_reach_the_stream_from_the_writer_thread_without_another_request(
    threaded, browser, pixel, cached_link, message
):
    for _ in range(3):
        assert browser.get(f"/api/track/open/{pixel.token}.png").content == tracking.PIXEL_PNG
    assert browser.get(f"/api/track/click/{cached_link.token}", REMOTE_ADDR="192.0.2.9")["Location"] == DESTINATION
    assert _eventually(lambda: _buffered() == 4)
    assert drain().recorded == 4
    assert tracking._redis().zcard(tracking._burst_key(str(message.pk), "192.0.2.9")) == 1
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 3
    assert EmailEvent.objects.filter(message=message, event_type="click", link=cached_link).count() == 1


def test_a_hit_redis_refuses_is_recorded_in_the_database_once(threaded, browser, pixel, message):
    client = tracking._redis()
    client.set(tracking.stream_key(), "not a stream")  # XADD now answers WRONGTYPE
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert _eventually(lambda: EmailEvent.objects.filter(message=message, event_type="open").count() == 1)
    client.delete(tracking.stream_key())
    tracking.flush_hits()
    assert drain().read == 0
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 1


def test_hits_gathered_while_redis_is_away_are_recorded_in_the_database(
    threaded, settings, browser, pixel, cached_link
):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    browser.get(f"/api/track/open/{pixel.token}.png")
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert _eventually(lambda: EmailEvent.objects.filter(event_type="open").count() == 2)
    # The click's lookup fails at once, so its destination comes from the database and it is recorded in the request.
    assert browser.get(f"/api/track/click/{cached_link.token}")["Location"] == DESTINATION
    assert EmailEvent.objects.filter(event_type="click").count() == 1


def test_the_exit_flush_writes_what_is_still_queued(settings, browser, pixel, monkeypatch):
    settings.TRACKING_FLUSH_MS = 5
    monkeypatch.setattr(tracking._HitWriter, "_start", lambda self: None)  # no thread: only the flush writes
    monkeypatch.setitem(tracking._writers, os.getpid(), tracking._HitWriter())
    browser.get(f"/api/track/open/{pixel.token}.png")
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert _buffered() == 0
    tracking.flush_hits()  # what atexit runs when gunicorn stops a worker gracefully
    assert _buffered() == 2


def test_a_forked_process_starts_a_writer_of_its_own(monkeypatch):
    parent = tracking._writer()
    monkeypatch.setattr(os, "getpid", lambda: -12345)
    child = tracking._writer()
    assert child is not parent
    assert child.thread is None
    assert tracking._writer() is child


def test_a_gracefully_stopped_gunicorn_worker_writes_out_its_queued_hits(tmp_path):
    """The deployment's gunicorn.conf.py with a one-minute gathering window: SIGTERM must not cost the hits."""
    root = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "OreeStats.settings_test",
        "TRACKING_FLUSH_MS": "60000",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER", "main"),  # the same key prefix as this test
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "OreeStats.wsgi:application"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("wb"),
    )
    try:
        token = "T" * 22
        served = _eventually(lambda: _fetch(f"http://127.0.0.1:{port}/api/track/open/{token}.png"), timeout=30)
        assert served, (tmp_path / "gunicorn.log").read_text()
        time.sleep(0.2)
        assert _buffered() == 0  # still gathering in the worker
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    [(_id, fields)] = tracking._redis().xrange(tracking.stream_key())
    assert fields[b"t"] == token.encode()


def _fetch(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.read() == tracking.PIXEL_PNG)
    except OSError:
        return False


def test_while_redis_is_taken_to_be_away_each_hit_is_recorded_in_its_request(
    threaded, browser, pixel, cached_link, message
):
    tracking._writer().unavailable_until = time.monotonic() + 60
    try:
        browser.get(f"/api/track/open/{pixel.token}.png")
        # Recorded before the response came back, not by the writer later.
        assert EmailEvent.objects.filter(message=message, event_type="open").count() == 1
        assert browser.get(f"/api/track/click/{cached_link.token}")["Location"] == DESTINATION
        assert EmailEvent.objects.filter(message=message, event_type="click", link=cached_link).count() == 1
    finally:
        tracking._writer().unavailable_until = 0.0
    tracking.flush_hits()
    assert _buffered() == 0


def test_a_full_queue_makes_the_request_record_its_own_hit(threaded, browser, pixel, message, monkeypatch):
    monkeypatch.setattr(tracking, "QUEUE_LIMIT", 0)
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 1
    tracking.flush_hits()
    assert _buffered() == 0


def test_a_batch_redis_could_not_take_marks_it_away_for_a_moment(threaded, settings, browser, pixel):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert _eventually(lambda: EmailEvent.objects.filter(event_type="open").count() == 1)
    assert tracking._writer().unavailable_until > time.monotonic()
    tracking._writer().unavailable_until = 0.0


def _waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # pg_locks, not pg_stat_activity: the latter is a snapshot taken once per transaction.
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return bool(cursor.fetchone()[0])


def test_a_hit_recorded_by_the_writer_and_the_drain_at_once_counts_once_without_an_error(
    threaded, browser, pixel, message, lossy_redis, caplog
):
    # Redis takes the XADD but its answer is lost, so the writer records the hit in the database
    # while a drain records the same hit from the stream, its batch's messages locked: the two
    # transactions deadlock on the message row and the hit's dedupe key. PostgreSQL cancels one.
    with transaction.atomic():
        locked = EmailSendQueue.objects.select_for_update().get(pk=message.pk)  # the drain's batch lock
        with override_settings(REDIS_URL=lossy_redis):
            browser.get(f"/api/track/open/{pixel.token}.png")
            assert _eventually(lambda: _buffered() == 1)
            assert _eventually(_waiting_for_a_lock)  # the writer's UPDATE of the message waits on us
        [(_entry_id, fields)] = tracking._redis().xrange(tracking.stream_key())
        record_event(message=locked, event_type="open", dedupe_key=tracking._dedupe_key(fields[b"h"].decode()))
    assert _eventually(lambda: not tracking._writer().queue and not tracking._writer().writing.locked())
    tracking.flush_hits()
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 1
    message.refresh_from_db()
    assert message.open_count == 1
    assert "Could not record a tracking hit" not in caplog.text
