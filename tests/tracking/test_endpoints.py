"""The pixel and click endpoints: always answered fast, recorded exactly, never an open redirect."""

from __future__ import annotations

import threading
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test import override_settings

from email_service.models import (
    ClientDailyActivity,
    EmailClickTracking,
    EmailEvent,
    EmailTrackingPixel,
    StepDailyStats,
)
from email_service.tracking import hits as tracking
from tests.tracking.conftest import SAFARI, drain, sent_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def link(message):
    return EmailClickTracking.objects.create(message=message, url="https://example.com/pricing?plan=pro#annual")


def test_the_pixel_is_an_uncacheable_png_for_known_and_unknown_ids(browser, pixel):
    for path in (
        f"/api/track/open/{pixel.token}.png",
        "/api/track/open/unknown-token-000000000.png",
        "/api/track/open/x",
    ):
        response = browser.get(path)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert response["Cache-Control"].startswith("no-store")
        assert response.content == tracking.PIXEL_PNG


def test_an_open_is_recorded_against_the_message_and_its_tenant(browser, pixel, message):
    browser.get(f"/api/track/open/{pixel.token}.png", REMOTE_ADDR="203.0.113.7")
    assert not EmailEvent.objects.filter(event_type="open").exists()  # buffered until the drain
    assert drain().recorded == 1
    event = EmailEvent.objects.get(event_type="open")
    assert (event.client_id, event.lead_id, event.message_id, event.campaign_id) == (
        message.client_id,
        message.lead_id,
        message.pk,
        message.campaign_id,
    )
    assert (event.is_machine, event.ip, event.user_agent) == (False, "203.0.113.7", SAFARI)
    message.refresh_from_db()
    assert message.open_count == 1 and message.first_opened_at is not None


def test_the_tracking_paths_skip_the_session_auth_and_csrf_middleware(browser, pixel, link):
    for path in (f"/api/track/open/{pixel.token}.png", f"/api/track/click/{link.token}"):
        response = browser.get(path, HTTP_COOKIE="sessionid=abc; csrftoken=def")
        # XFrameOptionsMiddleware and SessionMiddleware (Vary: Cookie) would have left their marks.
        assert "X-Frame-Options" not in response
        assert "Vary" not in response
        assert not response.cookies


def test_head_answers_like_get_without_a_body(browser, pixel):
    response = browser.head(f"/api/track/open/{pixel.token}.png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Length"] == str(len(tracking.PIXEL_PNG))
    assert response.content == b""


def test_a_post_to_the_pixel_is_refused_as_json(browser, pixel):
    response = browser.post(f"/api/track/open/{pixel.token}.png")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_the_pixel_is_served_when_recording_fails(browser, pixel, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("redis and database both on fire")

    monkeypatch.setattr(tracking, "buffer_open", broken)
    response = browser.get(f"/api/track/open/{pixel.token}.png")
    assert response.status_code == 200
    assert response.content == tracking.PIXEL_PNG


@override_settings(REDIS_URL=None)
def test_without_redis_the_hit_is_recorded_in_the_request(browser, pixel, link, message):
    browser.get(f"/api/track/open/{pixel.token}.png")
    browser.get(f"/api/track/click/{link.token}")
    assert EmailEvent.objects.filter(message=message, event_type="open", is_machine=False).count() == 1
    assert EmailEvent.objects.filter(message=message, event_type="click", is_machine=False).count() == 1


def test_a_pixel_token_never_expires(browser, message):
    pixel = EmailTrackingPixel.objects.create(message=message)
    EmailTrackingPixel.objects.filter(pk=pixel.pk).update(created_at="2020-01-01T00:00:00Z")
    browser.get(f"/api/track/open/{pixel.token}.png")
    drain()
    assert EmailEvent.objects.filter(event_type="open", message=message).count() == 1


def test_an_unknown_pixel_records_nothing(browser):
    browser.get("/api/track/open/AAAAAAAAAAAAAAAAAAAAAA.png")
    result = drain()
    assert (result.read, result.unknown, EmailEvent.objects.count()) == (1, 1, 0)


def test_a_click_redirects_to_the_stored_destination_and_is_recorded(browser, link, message):
    response = browser.get(f"/api/track/click/{link.token}")
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/pricing?plan=pro#annual"
    assert response["Referrer-Policy"] == "no-referrer"
    drain()
    event = EmailEvent.objects.get(event_type="click")
    assert (event.link_id, event.message_id, event.is_machine) == (link.pk, message.pk, False)


@pytest.mark.parametrize(
    "path",
    [
        "/api/track/click/AAAAAAAAAAAAAAAAAAAAAA",
        "/api/track/click/{message_id}",
        "/api/track/click/{token}x",
        "/api/track/click/{token_upper}",
        "/api/track/click/{token}/https://evil.example",
        "/api/track/click/{token}%2F..%2F..",
        "/api/track/click/https%3A%2F%2Fevil.example",
        "/api/track/click/javascript%3Aalert(1)",
        "/api/track/click/%2F%2Fevil.example",
        "/api/track/click/",
    ],
)
def test_nothing_in_the_path_can_make_the_click_redirect_elsewhere(browser, link, path):
    response = browser.get(
        path.format(message_id=link.message_id, token=link.token, token_upper=link.token.upper().swapcase()[::-1])
    )
    assert response.status_code == 404
    assert "Location" not in response
    assert response.json()["code"] in {"link_not_found", "not_found"}


@pytest.mark.parametrize(
    "query",
    ["?url=https://evil.example", "?next=//evil.example", "?redirect=javascript:alert(1)", "?u=https%3A%2F%2Fevil"],
)
def test_a_crafted_query_string_does_not_change_the_destination(browser, link, query):
    response = browser.get(f"/api/track/click/{link.token}{query}")
    assert response.status_code == 302
    assert response["Location"] == link.url


def test_another_messages_link_goes_only_to_that_messages_destination(browser, alice, charlie, link):
    charlie_message = sent_message(charlie)
    charlie_link = EmailClickTracking.objects.create(message=charlie_message, url="https://charlie.example/")
    assert browser.get(f"/api/track/click/{charlie_link.token}")["Location"] == "https://charlie.example/"
    assert browser.get(f"/api/track/click/{link.token}")["Location"] == link.url
    drain()
    assert EmailEvent.objects.get(link=charlie_link).client_id == charlie.pk
    assert EmailEvent.objects.get(link=link).client_id == alice.pk


def test_a_stored_non_http_destination_is_never_followed(browser, message):
    link = EmailClickTracking.objects.create(message=message, url="javascript:alert(document.cookie)")
    response = browser.get(f"/api/track/click/{link.token}")
    assert response.status_code == 404
    assert "Location" not in response


@override_settings(TRUSTED_PROXY_COUNT=1)
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("198.51.100.9", "198.51.100.9"),
        ("10.0.0.1, 198.51.100.9", "198.51.100.9"),  # the proxy appended the real client last
        ("  198.51.100.9:5555 ", "198.51.100.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("garbage, not-an-ip", None),
        ("%%%%,,,,", None),
        ("\x00\xff" * 50, None),
        ("", "127.0.0.1"),
    ],
)
def test_the_client_ip_comes_from_x_forwarded_for_as_far_as_the_trusted_proxies_allow(browser, pixel, header, expected):
    browser.get(f"/api/track/open/{pixel.token}.png", HTTP_X_FORWARDED_FOR=header)
    drain()
    assert EmailEvent.objects.get(event_type="open").ip == expected


@override_settings(TRUSTED_PROXY_COUNT=2)
def test_two_trusted_proxies_read_the_second_entry_from_the_right(browser, pixel):
    browser.get(f"/api/track/open/{pixel.token}.png", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.9, 10.0.0.2")
    drain()
    assert EmailEvent.objects.get(event_type="open").ip == "198.51.100.9"


def test_without_trusted_proxies_a_forged_x_forwarded_for_is_ignored(browser, pixel):
    browser.get(f"/api/track/open/{pixel.token}.png", HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR="192.0.2.44")
    drain()
    assert EmailEvent.objects.get(event_type="open").ip == "192.0.2.44"


def test_a_huge_user_agent_is_truncated(browser, pixel):
    browser.get(f"/api/track/open/{pixel.token}.png", HTTP_USER_AGENT="Mozilla/5.0 " + "x" * 5000)
    drain()
    assert len(EmailEvent.objects.get(event_type="open").user_agent) == tracking.USER_AGENT_MAX


def test_a_drain_that_runs_twice_over_the_same_hits_counts_them_once(browser, pixel, message, monkeypatch):
    browser.get(f"/api/track/open/{pixel.token}.png")
    client = tracking._redis()
    entries = client.xrange(tracking.stream_key())
    # Simulate a crash after recording and before the entries were deleted: replay them.
    tracking._record_entries(client, entries, tracking.DrainResult())
    drain()
    assert EmailEvent.objects.filter(event_type="open").count() == 1
    message.refresh_from_db()
    assert message.open_count == 1


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_browsers_lose_no_open_and_count_one_unique(alice):
    message = sent_message(alice)
    pixel = EmailTrackingPixel.objects.create(message=message)
    barrier = threading.Barrier(16)
    statuses: list[int] = []

    def open_it() -> None:
        browser = DjangoClient(HTTP_USER_AGENT=SAFARI)
        try:
            barrier.wait()
            for _ in range(10):
                statuses.append(browser.get(f"/api/track/open/{pixel.token}.png").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_it) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 160
    drain()
    message.refresh_from_db()
    assert message.open_count == 160
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 160
    assert StepDailyStats.objects.get(client=alice).opened == 1
    assert ClientDailyActivity.objects.get(client=alice).opens == 1


def test_a_click_whose_lookup_cannot_reach_the_database_is_a_503_not_a_redirect(browser, link, monkeypatch):
    from django.db import OperationalError

    def down(token):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tracking, "find_link", down)
    response = browser.get(f"/api/track/click/{link.token}")
    assert response.status_code == 503
    assert "Location" not in response


def test_the_click_path_encodes_nothing_from_the_request_into_the_location(browser, message):
    url = "https://example.com/a?b=" + quote("c d/é")
    link = EmailClickTracking.objects.create(message=message, url=url)
    assert browser.get(f"/api/track/click/{link.token}", HTTP_HOST="evil.example")["Location"] == url


@override_settings(TRUSTED_PROXY_COUNT=2)
def test_fewer_forwarded_entries_than_trusted_proxies_falls_back_to_the_socket_address(browser, pixel):
    """One entry where two proxies should have appended: it may be forged, so it is not believed."""
    browser.get(f"/api/track/open/{pixel.token}.png", HTTP_X_FORWARDED_FOR="203.0.113.66")
    drain()
    assert EmailEvent.objects.get(event_type="open").ip == "127.0.0.1"
