"""The hot path's Redis link cache and the batched, parallel drain: fast, yet every hit counted once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from email_service.events.rollups import actual_rollups, expected_rollups, rollup_differences
from email_service.models import ClientDailyActivity, EmailClickTracking, EmailEvent, EmailTrackingPixel, StepDailyStats
from email_service.tracking import hits as tracking
from email_service.tracking import machine
from tests.tracking.conftest import SAFARI, drain, sent_message

pytestmark = pytest.mark.django_db


def no_drift(client) -> list[str]:
    return rollup_differences(
        expected=expected_rollups(client_id=client.pk, tz_name=client.timezone),
        actual=actual_rollups(client_id=client.pk),
    )


def test_a_link_made_at_send_time_is_clicked_without_touching_the_database(
    browser, message, django_capture_on_commit_callbacks, django_assert_num_queries
):
    with django_capture_on_commit_callbacks(execute=True):
        tracking.prepare_tracked_html(message=message, html='<a href="https://example.com/a?b=1#c">go</a>')
    link = EmailClickTracking.objects.get(message=message)
    with django_assert_num_queries(0):
        response = browser.get(f"/api/track/click/{link.token}")
    assert (response.status_code, response["Location"]) == (302, "https://example.com/a?b=1#c")
    assert drain().recorded == 1
    assert EmailEvent.objects.get(event_type="click").link_id == link.token


def test_a_cache_miss_reads_the_database_once_and_fills_the_cache(browser, message, django_assert_num_queries):
    link = EmailClickTracking.objects.create(message=message, url="https://example.com/landing")
    with django_assert_num_queries(1):
        assert browser.get(f"/api/track/click/{link.token}")["Location"] == "https://example.com/landing"
    with django_assert_num_queries(0):
        assert browser.get(f"/api/track/click/{link.token}")["Location"] == "https://example.com/landing"
    drain()
    assert EmailEvent.objects.filter(event_type="click").count() == 2


def test_an_unknown_token_is_a_404_and_is_not_cached(browser):
    token = "A" * 22
    assert browser.get(f"/api/track/click/{token}").status_code == 404
    assert tracking._redis().get(tracking._link_key(token)) is None
    assert drain().read == 0


def test_the_cache_holds_no_non_http_destination(browser, message):
    link = EmailClickTracking.objects.create(message=message, url="javascript:alert(1)")
    tracking.cache_links([link])
    assert tracking._redis().get(tracking._link_key(link.token)) is None
    assert browser.get(f"/api/track/click/{link.token}").status_code == 404
    assert drain().read == 0


def buffer_mixed_hits(alice, *, messages: int = 6, opens: int = 30, clicks: int = 20) -> int:
    """Hits as the endpoints buffer them: people, scanners and clicks on never-opened messages."""
    total = 0
    for n in range(messages):
        message = sent_message(alice, hours_ago=2)
        pixel = EmailTrackingPixel.objects.create(message=message)
        link = EmailClickTracking.objects.create(message=message, url=f"https://example.com/{n}")
        agent = "curl/8.5.0" if n % 3 == 0 else SAFARI
        for i in range(opens if n % 2 else 0):
            ua = "Mozilla/5.0" if i == 0 else agent  # Apple MPP first, then the person
            facts = machine.HitFacts(method="GET", user_agent=ua, ip="198.51.100.7", prefetch=False)
            assert tracking.buffer_open(token=pixel.token, facts=facts)
            total += 1
        for i in range(clicks):
            facts = machine.HitFacts(method="GET", user_agent=agent, ip=f"198.51.100.{i}", prefetch=False)
            assert tracking.track_click(token=link.token, facts=facts).buffered
            total += 1
    return total


def test_a_batch_counts_like_one_by_one_recording(alice):
    total = buffer_mixed_hits(alice)
    result = tracking.drain_tracking_events(settle_seconds=0, batch_size=7)
    assert result.read == result.recorded == total
    implied = EmailEvent.objects.filter(detail__implied_by_click=True).count()
    assert implied == 2  # people clicked messages 2 and 4, which nobody opened (0's clicks are curl's)
    assert EmailEvent.objects.filter(event_type__in=["open", "click"]).count() == total + implied
    assert no_drift(alice) == []
    stats = StepDailyStats.objects.get(client=alice)
    # Opened by a person: 1 and 5, plus 2 and 4 through their clicks; 3's opens and 0's and 3's clicks are
    # curl's; every opened message was first fetched by Apple MPP.
    assert (stats.opened, stats.clicked, stats.machine_opened, stats.machine_clicked) == (4, 4, 3, 2)
    assert ClientDailyActivity.objects.get(client=alice).opens == 4


@pytest.mark.django_db(transaction=True)
def test_drains_running_side_by_side_record_every_hit_exactly_once(alice):
    total = buffer_mixed_hits(alice, messages=9, opens=40, clicks=30)
    results: list[tracking.DrainResult] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            results.append(tracking.drain_tracking_events(settle_seconds=0, batch_size=25))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.read for r in results) == sum(r.recorded for r in results) == total
    assert EmailEvent.objects.filter(dedupe_key__startswith="trk:").count() == total
    assert tracking._redis().xlen(tracking.stream_key()) == 0
    assert no_drift(alice) == []


def test_hits_taken_by_a_drain_that_died_are_recorded_by_another(alice, monkeypatch):
    total = buffer_mixed_hits(alice, messages=2, opens=5, clicks=3)
    client = tracking._redis()
    tracking._ensure_group(client)
    # A drain takes everything, then dies before recording anything.
    taken = client.xreadgroup(tracking.DRAIN_GROUP, "dead-drain", {tracking.stream_key(): ">"}, count=1000)
    assert sum(len(entries) for _, entries in taken) == total
    assert drain().read == 0  # still theirs while they might be alive
    monkeypatch.setattr(tracking, "DRAIN_CLAIM_IDLE_MS", 0)
    assert drain().recorded == total
    assert no_drift(alice) == []


def test_a_hit_recorded_before_a_crash_is_not_counted_again_when_replayed(alice, message):
    pixel = EmailTrackingPixel.objects.create(message=message)
    facts = machine.HitFacts(method="GET", user_agent=SAFARI, ip="198.51.100.7", prefetch=False)
    tracking.buffer_open(token=pixel.token, facts=facts)
    entries = tracking._redis().xrange(tracking.stream_key())
    tracking._record_entries(tracking._redis(), entries, tracking.DrainResult())  # committed, then the crash
    assert drain().recorded == 0
    message.refresh_from_db()
    assert message.open_count == 1 and EmailEvent.objects.filter(event_type="open").count() == 1
    assert no_drift(alice) == []


def test_a_click_long_after_the_send_from_a_scanner_is_labelled_in_a_batch_too(alice):
    message = sent_message(alice, hours_ago=0)
    message.sent_at = timezone.now() - timedelta(seconds=1)
    message.save(update_fields=["sent_at"])
    link = EmailClickTracking.objects.create(message=message, url="https://example.com/")
    facts = machine.HitFacts(method="GET", user_agent=SAFARI, ip="198.51.100.7", prefetch=False)
    tracking.track_click(token=link.token, facts=facts)
    drain()
    event = EmailEvent.objects.get(event_type="click")
    assert (event.is_machine, event.machine_reason) == (True, machine.TOO_SOON_AFTER_SEND)
    assert not EmailEvent.objects.filter(event_type="open").exists()
