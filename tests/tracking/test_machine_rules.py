"""Each machine rule fires on what it should, and a person next to it is still counted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from email_service.models import ClientDailyActivity, EmailClickTracking, EmailEvent, EmailTrackingPixel, StepDailyStats
from email_service.tracking import hits as tracking
from email_service.tracking import machine
from tests.tracking.conftest import GMAIL_PROXY, SAFARI, drain, sent_message

pytestmark = pytest.mark.django_db

OUTLOOK_DESKTOP = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def open_with(browser, pixel, method="get", **extra):
    getattr(browser, method)(f"/api/track/open/{pixel.token}.png", **extra)
    drain()
    return EmailEvent.objects.filter(event_type="open").latest("id")


def counts(client):
    step = StepDailyStats.objects.get(client=client)
    return step.opened, step.machine_opened, step.clicked, step.machine_clicked


def test_a_head_request_is_a_machine_and_a_get_is_a_person(browser, pixel, alice):
    assert (open_with(browser, pixel, "head").machine_reason) == machine.HEAD_REQUEST
    assert counts(alice)[:2] == (0, 1)
    event = open_with(browser, pixel)
    assert (event.is_machine, event.machine_reason) == (False, "")
    assert counts(alice)[:2] == (1, 1)


@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_SEC_PURPOSE": "prefetch;prerender"},
        {"HTTP_PURPOSE": "prefetch"},
        {"HTTP_X_PURPOSE": "preview"},
        {"HTTP_X_MOZ": "prefetch"},
    ],
)
def test_prefetch_headers_mark_a_machine(browser, pixel, header):
    event = open_with(browser, pixel, **header)
    assert (event.is_machine, event.machine_reason) == (True, machine.PREFETCH)


def test_an_unrelated_purpose_header_is_still_a_person(browser, pixel):
    assert not open_with(browser, pixel, HTTP_SEC_PURPOSE="").is_machine


@pytest.mark.parametrize(
    ("user_agent", "reason"),
    [
        ("", machine.EMPTY_USER_AGENT),
        ("   ", machine.EMPTY_USER_AGENT),
        ("Mozilla/5.0 (compatible; Microsoft Office Protection; SafeLinks)", machine.SCANNER_USER_AGENT),
        ("Mozilla/5.0 urldefense.proofpoint.com scanner", machine.SCANNER_USER_AGENT),
        ("Proofpoint URL Defense", machine.SCANNER_USER_AGENT),
        ("Mimecast URL Protect", machine.SCANNER_USER_AGENT),
        ("Barracuda Sentinel (EE)", machine.SCANNER_USER_AGENT),
        ("curl/8.5.0", machine.SCANNER_USER_AGENT),
        ("python-requests/2.32.3", machine.SCANNER_USER_AGENT),
        ("Go-http-client/1.1", machine.SCANNER_USER_AGENT),
    ],
)
def test_scanner_and_tool_user_agents_are_machines(browser, pixel, user_agent, reason):
    event = open_with(browser, pixel, HTTP_USER_AGENT=user_agent)
    assert (event.is_machine, event.machine_reason) == (True, reason)


@pytest.mark.parametrize("user_agent", [SAFARI, CHROME, OUTLOOK_DESKTOP, GMAIL_PROXY])
def test_people_in_real_mail_clients_and_behind_gmails_image_proxy_are_counted(browser, pixel, alice, user_agent):
    event = open_with(browser, pixel, HTTP_USER_AGENT=user_agent, REMOTE_ADDR="66.249.84.10")
    assert (event.is_machine, event.machine_reason) == (False, "")
    assert counts(alice)[:2] == (1, 0)


@pytest.mark.parametrize(
    "request_from", [{"HTTP_USER_AGENT": "Mozilla/5.0"}, {"HTTP_USER_AGENT": SAFARI, "REMOTE_ADDR": "17.58.101.2"}]
)
def test_apple_mail_privacy_protection_counts_as_a_machine_open_not_an_open(browser, pixel, alice, request_from):
    event = open_with(browser, pixel, **request_from)
    assert (event.is_machine, event.machine_reason) == (True, machine.APPLE_MPP)
    assert counts(alice)[:2] == (0, 1)
    assert ClientDailyActivity.objects.get(client=alice).machine_opens == 1


def test_apple_mail_from_a_person_outside_apples_network_is_counted(browser, pixel, alice):
    open_with(browser, pixel, HTTP_USER_AGENT=SAFARI, REMOTE_ADDR="81.2.69.160")
    assert counts(alice)[:2] == (1, 0)


@override_settings(MACHINE_OPEN_WINDOW_SECONDS=60, MACHINE_CLICK_WINDOW_SECONDS=60)
def test_an_open_or_click_right_after_the_send_is_a_machine_and_later_a_person(browser, alice):
    fresh = sent_message(alice, hours_ago=0)  # sent a moment ago
    fresh_pixel = EmailTrackingPixel.objects.create(message=fresh)
    fresh_link = EmailClickTracking.objects.create(message=fresh, url="https://example.com/")
    browser.get(f"/api/track/open/{fresh_pixel.token}.png")
    browser.get(f"/api/track/click/{fresh_link.token}")
    drain()
    reasons = set(EmailEvent.objects.filter(message=fresh).values_list("machine_reason", flat=True))
    assert reasons == {machine.TOO_SOON_AFTER_SEND}

    older = sent_message(alice, hours_ago=0.1)  # six minutes ago: outside the window
    older_pixel = EmailTrackingPixel.objects.create(message=older)
    browser.get(f"/api/track/open/{older_pixel.token}.png")
    drain()
    assert not EmailEvent.objects.get(message=older).is_machine


@override_settings(MACHINE_OPEN_WINDOW_SECONDS=0)
def test_a_zero_window_turns_the_timing_rule_off(browser, alice):
    fresh = sent_message(alice, hours_ago=0)
    pixel = EmailTrackingPixel.objects.create(message=fresh)
    assert not open_with(browser, pixel).is_machine


@pytest.fixture
def five_links(message):
    return [
        EmailClickTracking.objects.create(message=message, url=f"https://example.com/{n}", position=n) for n in range(5)
    ]


def click_at(browser, monkeypatch, link, at_ms, ip="198.51.100.20"):
    monkeypatch.setattr(tracking, "_now_ms", lambda: at_ms)
    browser.get(f"/api/track/click/{link.token}", REMOTE_ADDR=ip)


def test_three_links_clicked_within_two_seconds_from_one_source_are_all_a_burst(
    browser, monkeypatch, five_links, alice
):
    start = int(timezone.now().timestamp() * 1000)
    for offset, link in zip((0, 700, 1400), five_links, strict=False):
        click_at(browser, monkeypatch, link, start + offset)
    drain()
    events = EmailEvent.objects.filter(event_type="click")
    assert [(e.is_machine, e.machine_reason) for e in events] == [(True, machine.CLICK_BURST)] * 3
    assert counts(alice)[2:] == (0, 1)
    # A machine click implies no open.
    assert not EmailEvent.objects.filter(event_type="open").exists()


def test_two_links_or_slow_clicks_or_different_sources_are_a_person(browser, monkeypatch, five_links, alice, message):
    start = int(timezone.now().timestamp() * 1000)
    click_at(browser, monkeypatch, five_links[0], start)
    click_at(browser, monkeypatch, five_links[1], start + 500)
    # The same link again is not a third link.
    click_at(browser, monkeypatch, five_links[1], start + 900)
    # A third link, but 2.5 s after the first click.
    click_at(browser, monkeypatch, five_links[2], start + 2600)
    # Three links from three sources within a second.
    for n, ip in zip((2, 3, 4), ("192.0.2.1", "192.0.2.2", "192.0.2.3"), strict=True):
        click_at(browser, monkeypatch, five_links[n], start + 10_000 + n, ip=ip)
    drain()
    assert not EmailEvent.objects.filter(event_type="click", is_machine=True).exists()
    assert EmailEvent.objects.filter(event_type="click").count() == 7
    message.refresh_from_db()
    assert message.click_count == 7
    assert counts(alice)[2:] == (1, 0)


def test_the_drain_leaves_hits_younger_than_the_burst_window_so_a_burst_is_labelled_whole(
    browser, monkeypatch, five_links
):
    start = int(timezone.now().timestamp() * 1000)
    click_at(browser, monkeypatch, five_links[0], start)
    click_at(browser, monkeypatch, five_links[1], start + 300)
    # The scheduled drain only takes hits older than the burst window: the first two wait.
    result = tracking.drain_tracking_events()
    assert (result.read, EmailEvent.objects.count()) == (0, 0)
    click_at(browser, monkeypatch, five_links[2], start + 600)
    drain()
    assert set(EmailEvent.objects.values_list("machine_reason", flat=True)) == {machine.CLICK_BURST}


def test_a_drain_behind_a_backlog_labels_a_click_only_once_the_rest_of_its_burst_was_taken(five_links, message):
    # Three clicks a minute old, 400 ms apart, as the hot path buffers them; the drain reads two hits a
    # round, so its first round holds the burst's first two clicks and not yet the third.
    client = tracking._redis()
    facts = machine.HitFacts(method="GET", user_agent=CHROME, ip="198.51.100.20", prefetch=False)
    start = int(timezone.now().timestamp() * 1000) - 60_000
    for n, link in enumerate(five_links[:3]):
        fields = tracking._hit_fields("c", link.token, facts, message_id=str(message.pk))
        fields["ts"] = start + 400 * n
        client.xadd(tracking.stream_key(), fields, id=f"{start + 400 * n}-0")
    assert tracking.drain_tracking_events(batch_size=2).recorded == 3
    assert list(EmailEvent.objects.values_list("machine_reason", flat=True)) == [machine.CLICK_BURST] * 3


def test_a_persons_click_on_a_message_nobody_opened_also_counts_its_open(browser, message, alice):
    link = EmailClickTracking.objects.create(message=message, url="https://example.com/")
    browser.get(f"/api/track/click/{link.token}")
    browser.get(f"/api/track/click/{link.token}")
    drain()
    opens = EmailEvent.objects.filter(event_type="open")
    assert opens.count() == 1 and opens.get().detail == {"implied_by_click": True}
    assert counts(alice) == (1, 0, 1, 0)


def test_a_click_after_a_real_open_adds_no_second_open(browser, message, alice):
    pixel = EmailTrackingPixel.objects.create(message=message)
    link = EmailClickTracking.objects.create(message=message, url="https://example.com/")
    browser.get(f"/api/track/open/{pixel.token}.png")
    drain()
    browser.get(f"/api/track/click/{link.token}")
    drain()
    assert EmailEvent.objects.filter(event_type="open").count() == 1
    assert counts(alice) == (1, 0, 1, 0)


def test_a_machine_opens_labels_stay_apart_from_a_later_persons_open(browser, pixel, alice, message):
    open_with(browser, pixel, HTTP_USER_AGENT="Mozilla/5.0")  # Apple MPP on delivery
    open_with(browser, pixel)  # the person, later
    assert counts(alice)[:2] == (1, 1)
    message.refresh_from_db()
    assert message.open_count == 1 and message.machine_opened_at is not None


def test_the_burst_rule_itself(monkeypatch):
    clicks = [(0.0, "a", "1"), (0.5, "b", "2"), (1.9, "c", "3"), (5.0, "d", "4")]
    assert machine.burst_members(clicks) == {"1", "2", "3"}
    assert machine.burst_members([(0.0, "a", "1"), (0.1, "a", "2"), (0.2, "b", "3")]) == set()
    assert machine.burst_members([(0.0, "a", "1"), (1.5, "b", "2"), (3.0, "c", "3")]) == set()
    assert (timedelta(seconds=machine.BURST_WINDOW_SECONDS), machine.BURST_MIN_LINKS) == (timedelta(seconds=2), 3)
