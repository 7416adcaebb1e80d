"""The hot path's own Redis connection: a hit is buffered once, or recorded in the request once, never both."""

from __future__ import annotations

import pytest
import redis
from django.test import override_settings

from email_service.models import EmailEvent
from email_service.tracking import hits as tracking
from tests.tracking.conftest import DESTINATION, drain

pytestmark = pytest.mark.django_db


def _buffered() -> list[dict[str, str]]:
    client = tracking._redis()
    assert client is not None
    return [
        {tracking._text(key): tracking._text(value) for key, value in (fields or {}).items()}
        for _id, fields in client.xrange(tracking.stream_key()) or []
    ]


def test_an_open_is_buffered_with_every_field_the_drain_reads(browser, pixel):
    browser.get(
        f"/api/track/open/{pixel.token}.png",
        HTTP_USER_AGENT="Mozilla/5.0 Thunderbird/128 (Zürich)",
        HTTP_SEC_PURPOSE="prefetch",
        REMOTE_ADDR="192.0.2.7",
    )
    [hit] = _buffered()
    assert hit.keys() == {"k", "h", "t", "m", "ua", "ip", "p", "ts"}
    assert (hit["k"], hit["t"], hit["m"], hit["ip"], hit["p"]) == ("o", pixel.token, "GET", "192.0.2.7", "1")
    assert hit["ua"] == "Mozilla/5.0 Thunderbird/128 (Zürich)"
    drain()
    event = EmailEvent.objects.get(event_type="open")
    assert (event.is_machine, event.user_agent) == (True, "Mozilla/5.0 Thunderbird/128 (Zürich)")


def test_a_click_is_buffered_and_redirects_to_the_stored_url_and_the_drain_notes_it(browser, cached_link, message):
    response = browser.get(f"/api/track/click/{cached_link.token}", REMOTE_ADDR="192.0.2.8")
    assert response.status_code == 302
    assert response["Location"] == DESTINATION
    [(entry_id, hit)] = tracking._redis().xrange(tracking.stream_key())
    hit = {tracking._text(key): tracking._text(value) for key, value in hit.items()}
    assert hit.keys() == {"k", "h", "t", "m", "ua", "ip", "p", "ts", "g"}
    assert (hit["k"], hit["t"], hit["ip"], hit["p"]) == ("c", cached_link.token, "192.0.2.8", "0")
    assert hit["g"] == str(message.pk)
    # The request writes the hit only; the drain writes the burst note as it takes the hit.
    burst_key = tracking._burst_key(str(message.pk), "192.0.2.8")
    assert not tracking._redis().exists(burst_key)
    drain()
    assert tracking._redis().zrange(burst_key, 0, -1, withscores=True) == [
        (f"{cached_link.token}|{tracking._text(entry_id)}".encode(), float(hit["ts"]))
    ]
    assert 0 < tracking._redis().ttl(burst_key) <= tracking.BURST_KEY_TTL_SECONDS
    assert EmailEvent.objects.filter(event_type="click", link=cached_link).count() == 1


def test_a_click_renews_its_cached_destination_for_another_thirty_days(browser, cached_link):
    client = tracking._redis()
    key = tracking._link_key(cached_link.token)
    client.expire(key, 60)
    assert browser.get(f"/api/track/click/{cached_link.token}")["Location"] == DESTINATION
    assert client.ttl(key) > tracking.LINK_CACHE_TTL_SECONDS - 60


def test_a_connection_redis_dropped_costs_no_hit_and_counts_none_twice(browser, pixel, message):
    client = tracking._redis()
    browser.get(f"/api/track/open/{pixel.token}.png")
    own_id = tracking._call(client, b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n")
    client.client_kill_filter(_id=own_id)
    # The dropped connection fails this hit: it is recorded in the request instead, then the next reconnects.
    browser.get(f"/api/track/open/{pixel.token}.png")
    browser.get(f"/api/track/open/{pixel.token}.png")
    assert len(_buffered()) == 2
    assert EmailEvent.objects.filter(event_type="open").count() == 1
    drain()
    assert EmailEvent.objects.filter(event_type="open").count() == 3
    message.refresh_from_db()
    assert message.open_count == 3


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_with_redis_unreachable_each_hit_is_recorded_in_the_request_once(browser, pixel, cached_link, message):
    assert browser.get(f"/api/track/open/{pixel.token}.png").content == tracking.PIXEL_PNG
    response = browser.get(f"/api/track/click/{cached_link.token}")
    assert response.status_code == 302
    assert response["Location"] == DESTINATION
    assert EmailEvent.objects.filter(message=message, event_type="open", is_machine=False).count() == 1
    assert EmailEvent.objects.filter(message=message, event_type="click", is_machine=False).count() == 1


def test_an_unknown_click_token_buffers_nothing_and_is_a_404(browser, cached_link):
    response = browser.get("/api/track/click/AAAAAAAAAAAAAAAAAAAAAA")
    assert response.status_code == 404
    assert _buffered() == []


def test_the_lookup_baseline_finds_the_destination_the_click_finds(cached_link):
    assert tracking.cached_destination(cached_link.token) == DESTINATION
    assert _buffered() == []


def test_a_hit_redis_took_but_whose_answer_was_lost_counts_once(browser, pixel, cached_link, message, lossy_redis):
    with override_settings(REDIS_URL=lossy_redis):
        assert browser.get(f"/api/track/open/{pixel.token}.png").content == tracking.PIXEL_PNG
        assert browser.get(f"/api/track/click/{cached_link.token}")["Location"] == DESTINATION
    # Unacknowledged, so each was recorded in the request (the open first: the click implies none);
    # yet both reached the stream too.
    assert len(_buffered()) == 2
    events = EmailEvent.objects.filter(message=message)
    assert sorted(events.values_list("event_type", flat=True)) == ["click", "open"]
    drain()
    assert sorted(events.values_list("event_type", flat=True)) == ["click", "open"]
    message.refresh_from_db()
    assert (message.open_count, message.click_count) == (1, 1)


def test_a_drain_that_loses_redis_mid_batch_leaves_the_batch_for_the_next_one(
    browser, pixel, cached_link, message, cutting_redis
):
    browser.get(f"/api/track/open/{pixel.token}.png")
    browser.get(f"/api/track/click/{cached_link.token}")
    # The burst lookup (ZRANGEBYSCORE) is the drain's one Redis call between taking a batch and
    # acknowledging it; the connection closes under it, every time redis-py tries again.
    with override_settings(REDIS_URL=cutting_redis(b"ZRANGEBYSCORE")), pytest.raises(redis.ConnectionError):
        drain()
    assert not EmailEvent.objects.filter(message=message).exists()
    assert len(_buffered()) == 2  # nothing acknowledged, nothing dropped
    assert drain().recorded == 2
    assert sorted(EmailEvent.objects.filter(message=message).values_list("event_type", flat=True)) == ["click", "open"]
