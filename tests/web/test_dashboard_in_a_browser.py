"""The web dashboard driven in Debian's Chromium against the app on loopback, with real data.

Alice uses the dashboard; Charlie has data of his own that must never show up on Alice's pages.
Every figure the page shows is compared with what the JSON API answers for the same token.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.conf import settings
from django.urls import Resolver404, resolve
from django.utils import timezone
from playwright.sync_api import expect

from email_service.dashboard.sessions import authenticate_access_token, issue_access_token
from email_service.events.recording import record_event
from email_service.models import Campaign, Client, ClientSession, EmailSendQueue, Mailbox
from tests.conftest import dashboard_api
from tests.factories import DEFAULT_PASSWORD, CampaignFactory, EmailSendQueueFactory, MailboxFactory
from tests.web.conftest import requires_chromium, sign_in, wait_until_loaded
from tests.web.history import Type, outreach_history, sent_message

pytestmark = [pytest.mark.slow, requires_chromium]


def percent(value) -> str:
    """What the page shows for an API rate: the API's two-decimal percentage, trailing zeros dropped."""
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def test_alice_signs_in_and_the_overview_shows_the_apis_figures_for_every_period(
    page, assert_clean_page, alice, charlie
):
    outreach_history(alice)
    outreach_history(charlie, scale=3)  # Charlie's bigger numbers must never appear on Alice's page
    stats = dashboard_api(alice).get("/api/client/stats").json()
    timeline = dashboard_api(alice).get("/api/client/timeline?days=30").json()["days"]
    assert stats["all_time"]["emails_sent"] == 14 and stats["last_7_days"]["emails_sent"] == 7

    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD)

    assert page.locator("[data-client-name]").text_content() == "Alice Corp"
    figures = page.locator("[data-figures]")
    for period, label in [("last_7_days", "7 days"), ("last_30_days", "30 days"), ("all_time", "All time")]:
        page.locator(".segmented label", has_text=label).click()
        expected = stats[period]
        assert figures.get_attribute("data-period") == period
        card = figures.locator('[data-metric="emails_sent"]')
        assert card.locator("[data-value]").text_content() == f"{expected['emails_sent']:,}"
        assert card.locator("[data-sub]").text_content() == f"{expected['unsubscribes']} unsubscribed"
        for rate, count in [
            ("open_rate", "opens"),
            ("click_rate", "clicks"),
            ("reply_rate", "replies"),
            ("bounce_rate", "bounces"),
        ]:
            card = figures.locator(f'[data-metric="{rate}"]')
            assert card.locator("[data-value]").text_content() == percent(expected[rate]), (period, rate)
            assert card.locator("[data-sub]").get_attribute("data-count") == str(expected[count]), (period, count)
        assert page.locator("[data-machine-opens]").text_content() == str(expected["machine_opens"])
        assert page.locator("[data-machine-clicks]").text_content() == str(expected["machine_clicks"])
    assert "not people" in page.locator("[data-machine-note]").text_content()

    # The chart and its table: one entry per day, the API's numbers, newest first in the table.
    assert page.locator("[data-chart]").get_attribute("data-days") == "30"
    assert page.locator("[data-chart] svg rect.bar").count() == sum(1 for day in timeline if day["sent"])
    page.get_by_text("Show as a table").click()
    rows = page.locator("[data-timeline-rows] tr")
    assert rows.count() == 30
    for row_index, day in enumerate(reversed(timeline)):
        cells = rows.nth(row_index).locator("th, td").all_text_contents()
        assert cells == [day["date"], str(day["sent"]), str(day["opens"]), str(day["clicks"]), str(day["replies"])]


def test_the_login_form_shows_the_apis_errors_and_the_throttles_wait(page, assert_clean_page, alice):
    page.goto("/dashboard/login/")
    page.get_by_role("button", name="Sign in").click()
    assert page.locator('[data-error-for="email"]').text_content() == "Enter your email address."

    page.get_by_label("Email").fill(alice.email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.locator("[data-form-error]")
    alert.filter(has_text="Invalid email or password.").wait_for()
    assert page.get_by_label("Password").input_value() == ""

    for _ in range(20):
        # The page clears the password once it has handled the previous answer: fill only after
        # that, or the clearing can land after the fill and the form would not submit at all.
        expect(page.get_by_label("Password")).to_have_value("")
        page.get_by_label("Password").fill("still-not-the-password")
        with page.expect_response("**/api/client/login") as answer:
            page.get_by_role("button", name="Sign in").click()
        if answer.value.status == 429:
            break
    assert answer.value.status == 429
    expect(alert).to_contain_text("Too many")
    assert "Too many failed login attempts; try again later." in alert.text_content()
    wait = int(page.locator("[data-retry-after]").get_attribute("data-retry-after"))
    assert 0 < wait <= 15 * 60
    assert re.search(r"You can try again in \d+ (minutes?|seconds?)\.", alert.text_content())
    assert page.get_by_role("button", name="Sign in").is_disabled()
    assert not ClientSession.objects.filter(client=alice).exists()


def test_an_ended_session_goes_back_to_login_and_then_to_the_same_page(page, assert_clean_page, alice):
    for index in range(30):
        message = sent_message(client=alice, campaign=alice.campaigns.get(), days_ago=2)
        record_event(
            message=message,
            event_type=Type.REPLY,
            occurred_at=message.sent_at + timedelta(minutes=index + 1),
            detail={"subject": f"Reply number {index}", "snippet": "ok", "from_email": message.recipient_email},
        )
    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/replies/?page=2")
    assert page.locator(".reply").count() == 5
    assert page.locator("[data-page-label]").text_content() == "Page 2"

    # The token is revoked behind the browser's back (a password change elsewhere, say).
    ClientSession.objects.filter(client=alice).update(revoked_at=ClientSession.objects.get(client=alice).created_at)
    page.reload()
    page.wait_for_url("**/dashboard/login/?next=%2Fdashboard%2Freplies%2F%3Fpage%3D2&reason=expired")
    assert "Your session has ended" in page.locator("[data-notice]").text_content()
    page.get_by_label("Email").fill(alice.email)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/replies/?page=2")
    expect(page.locator(".reply")).to_have_count(5)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/login/?reason=signed_out")
    assert "You have signed out." in page.locator("[data-notice]").text_content()
    assert ClientSession.objects.filter(client=alice, revoked_at__isnull=True).count() == 0
    assert page.evaluate("sessionStorage.getItem('oree.session')") is None


def test_the_login_page_never_sends_the_user_to_another_site(page, assert_clean_page, alice):
    for hostile in ["https://evil.test/", "//evil.test/dashboard/", "/dashboard/\\\\evil.test", "javascript:alert(1)"]:
        page.goto("/dashboard/login/")
        page.evaluate("sessionStorage.clear()")
        page.goto(f"/dashboard/login/?next={quote(hostile, safe='')}")
        page.get_by_label("Email").fill(alice.email)
        page.get_by_label("Password").fill(DEFAULT_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"^http://localhost:\d+/dashboard/$"))
    assert page.problems.dialogs == []


def test_alice_pauses_and_resumes_a_campaign_with_immediate_feedback(page, assert_clean_page, alice, charlie):
    campaign, _ = outreach_history(alice)
    waiting = EmailSendQueueFactory.create_batch(3, client=alice, campaign=campaign, sequence_number=2)
    charlie_campaign = CampaignFactory(client=charlie, name="Charlie's secret campaign")
    campaigns = dashboard_api(alice).get("/api/client/campaigns").json()["campaigns"]
    spring = next(item for item in campaigns if item["name"] == "Spring outreach")

    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/campaigns/")
    assert page.get_by_text("Charlie's secret campaign").count() == 0
    card = page.locator(f'[data-campaign-id="{campaign.pk}"]')
    for step in spring["steps"]:
        row = card.locator(f'tr[data-step="{step["sequence_number"]}"]')
        assert row.locator('[data-col="emails_sent"]').text_content() == str(step["emails_sent"])
        for count, rate in [("opens", "open_rate"), ("clicks", "click_rate"), ("replies", "reply_rate")]:
            cell = row.locator(f'[data-col="{count}"]')
            assert cell.locator(".cell-count").text_content() == str(step[count])
            assert cell.locator(".cell-rate").text_content() == percent(step[rate])

    assert card.locator("[data-status]").text_content() == "Active"
    card.get_by_role("button", name="Pause Spring outreach").click()
    card.locator('[data-status="paused"]').wait_for()
    assert card.locator("[data-status]").text_content() == "Paused"
    assert "is paused: 3 unsent emails wait" in page.locator("[data-notice]").text_content()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert set(EmailSendQueue.objects.filter(pk__in=[m.pk for m in waiting]).values_list("status", flat=True)) == {
        "paused"
    }

    card.get_by_role("button", name="Resume Spring outreach").click()
    card.locator('[data-status="active"]').wait_for()
    assert "is running again: 3 unsent emails" in page.locator("[data-notice]").text_content()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE
    assert set(EmailSendQueue.objects.filter(pk__in=[m.pk for m in waiting]).values_list("status", flat=True)) == {
        "queued"
    }
    charlie_campaign.refresh_from_db()
    assert charlie_campaign.status == Campaign.Status.ACTIVE


HOSTILE_SNIPPET = (
    "<script>window.__pwned = 'script'; alert('script')</script>"
    "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\">"
)


def test_a_reply_with_hostile_html_is_shown_as_inert_text(page, assert_clean_page, alice, charlie):
    campaign = alice.campaigns.get()
    bounce = sent_message(client=alice, campaign=campaign, days_ago=3, email="gone@nowhere.test")
    record_event(message=bounce, event_type=Type.BOUNCE, occurred_at=bounce.sent_at.replace(second=30), detail={})
    ooo = sent_message(client=alice, campaign=campaign, step=2, days_ago=2, email="away@prospect.test")
    record_event(
        message=ooo,
        event_type=Type.AUTO_REPLY,
        occurred_at=ooo.sent_at.replace(second=30),
        detail={"subject": "Out of office", "snippet": "Back on Monday."},
    )
    hostile = sent_message(client=alice, campaign=campaign, step=3, days_ago=1, email="mallory@attacker.test")
    record_event(
        message=hostile,
        event_type=Type.REPLY,
        occurred_at=hostile.sent_at.replace(second=30),
        detail={"subject": "<b>Re:</b> <a href='javascript:alert(1)'>hi</a>", "snippet": HOSTILE_SNIPPET},
    )
    charlie_message = sent_message(client=charlie, campaign=charlie.campaigns.get(), days_ago=1)
    record_event(
        message=charlie_message,
        event_type=Type.REPLY,
        detail={"subject": "Charlie's lead answered", "snippet": "secret"},
    )

    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/replies/")
    replies = page.locator(".reply")
    assert replies.count() == 3  # newest first, Charlie's reply nowhere
    first, second, third = (replies.nth(index) for index in range(3))
    assert first.locator("[data-kind]").text_content() == "Reply"
    assert first.locator("[data-lead]").text_content() == "mallory@attacker.test"
    assert "Step 3" in first.text_content()
    assert first.locator("[data-snippet]").text_content() == HOSTILE_SNIPPET
    assert first.locator("[data-subject]").text_content() == "<b>Re:</b> <a href='javascript:alert(1)'>hi</a>"
    assert first.get_by_text("<script>window.__pwned", exact=False).is_visible()
    assert page.locator(".feed img, .feed script, .feed a, .feed b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.problems.dialogs == []
    assert second.locator("[data-kind]").text_content() == "Auto-reply"
    assert "Step 2" in second.text_content()
    assert third.locator("[data-kind]").text_content() == "Bounce"
    assert third.locator("[data-lead]").text_content() == "gone@nowhere.test"
    assert page.get_by_text("Charlie's lead answered").count() == 0
    assert page.locator("[data-pager]").is_hidden()


def test_a_disconnected_mailbox_shows_its_error_in_plain_words_and_reconnect_asks_the_api(
    page, assert_clean_page, alice, charlie
):
    MailboxFactory(
        client=alice, email="sales@alice.test", sent_today=37, sent_today_date=timezone.localdate(), daily_limit=150
    )
    broken = MailboxFactory(
        client=alice,
        email="founder@alice.test",
        status=Mailbox.Status.DISCONNECTED,
        last_error="invalid_grant: Token has been expired or revoked.",
    )
    MailboxFactory(client=charlie, email="charlie@charlie.test")
    mailboxes = {item["email"]: item for item in dashboard_api(alice).get("/api/client/mailboxes").json()["mailboxes"]}

    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/mailboxes/")
    assert page.locator("[data-mailbox-id]").count() == 2
    assert page.get_by_text("charlie@charlie.test").count() == 0
    active = page.locator("[data-mailbox-id]", has_text="sales@alice.test")
    assert active.locator("[data-status]").text_content() == "Active"
    assert active.locator("[data-sent-today]").text_content() == "37 / 150"
    assert f"{mailboxes['sales@alice.test']['remaining_today']} left today" in active.text_content()
    card = page.locator(f'[data-mailbox-id="{broken.pk}"]')
    assert card.locator("[data-status]").text_content() == "Disconnected"
    assert (
        card.locator("[data-last-error]").text_content().startswith("Google no longer lets OreeStats use this mailbox")
    )

    with page.expect_request(re.compile(r"/api/oauth/initiate/")) as initiate:
        card.get_by_role("button", name="Reconnect founder@alice.test").click()
    request = initiate.value
    assert request.url.endswith(f"/api/oauth/initiate/{alice.pk}?return_to=%2Fdashboard%2Fmailboxes%2F")
    assert request.headers["accept"] == "application/json"
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert authenticate_access_token(token).client == alice  # the dashboard's own JWT, never the API key


def _oauth_initiate_route_exists() -> bool:
    try:
        resolve("/api/oauth/initiate/00000000-0000-0000-0000-000000000000")
    except Resolver404:
        return False
    return True


@pytest.mark.skipif(not _oauth_initiate_route_exists(), reason="GET /api/oauth/initiate/<client_id> has not landed yet")
def test_connect_gmail_goes_to_googles_consent_page(page, assert_clean_page, alice):
    seen = []
    google = re.compile(re.escape(settings.GOOGLE_AUTH_URI.split("?")[0]) + r".*")
    page.route(google, lambda route: (seen.append(route.request.url), route.fulfill(body="consent page")))
    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/mailboxes/")
    page.get_by_role("button", name="Connect Gmail").click()
    page.wait_for_url(google)
    assert seen and "state=" in seen[0]


def test_settings_show_the_apis_validation_error_beside_the_field_then_save(page, assert_clean_page, alice, charlie):
    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/settings/")
    limit = page.get_by_label("Daily limit per mailbox")
    expect(limit).to_have_value("2000")

    limit.fill("5000")
    page.get_by_role("button", name="Save settings").click()
    error = page.locator("#daily-limit-error")
    error.wait_for()
    assert error.text_content() == "Daily limit per mailbox must be between 1 and 2000."
    assert limit.get_attribute("aria-invalid") == "true"
    assert "daily-limit-error" in limit.get_attribute("aria-describedby")
    assert "Settings not saved" in page.locator("[data-notice]").text_content()
    alice.refresh_from_db()
    assert alice.mailbox_daily_limit == 2000

    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    limit.fill("500")
    page.get_by_role("button", name="Save settings").click()
    page.locator("#timezone-error").wait_for()
    assert "is not an IANA time zone" in page.locator("#timezone-error").text_content()
    assert error.is_hidden()

    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_label("From").fill("09:00")
    page.get_by_label("Until").fill("17:30")
    page.get_by_label("Sat").uncheck()
    page.get_by_label("Sun").uncheck()
    page.get_by_label("Track clicks").uncheck()
    page.get_by_role("button", name="Save settings").click()
    page.locator("[data-notice]", has_text="Settings saved.").wait_for()
    assert page.locator("[data-settings-form] .field-error:visible").count() == 0
    alice.refresh_from_db()
    assert (alice.mailbox_daily_limit, alice.timezone, alice.click_tracking) == (500, "Europe/Paris", False)
    assert (alice.window_start_minute, alice.window_end_minute) == (9 * 60, 17 * 60 + 30)
    assert alice.sending_days == ["mon", "tue", "wed", "thu", "fri"]
    charlie.refresh_from_db()
    assert (charlie.mailbox_daily_limit, charlie.timezone) == (2000, "UTC")

    page.reload()
    wait_until_loaded(page)
    expect(page.get_by_label("Daily limit per mailbox")).to_have_value("500")
    assert page.get_by_label("Time zone").input_value() == "Europe/Paris"


def test_changing_the_password_shows_errors_beside_the_fields_then_signs_out_other_browsers(
    page, assert_clean_page, alice
):
    elsewhere = issue_access_token(client=alice)
    sign_in(page, email=alice.email, password=DEFAULT_PASSWORD, path="/dashboard/settings/")

    page.get_by_label("Current password").fill("wrong-password")
    page.get_by_label("New password", exact=True).fill("Another-Sturdy-Password-9")
    page.get_by_label("Repeat the new password").fill("Another-Sturdy-Password-9")
    page.get_by_role("button", name="Change password").click()
    page.locator("#current-password-error").wait_for()
    assert page.locator("#current-password-error").text_content() == "The current password is wrong."
    assert page.url.endswith("/dashboard/settings/")  # a wrong password is not a lost session

    page.get_by_label("Current password").fill(DEFAULT_PASSWORD)
    page.get_by_label("New password", exact=True).fill("password")
    page.get_by_label("Repeat the new password").fill("password")
    page.get_by_role("button", name="Change password").click()
    page.locator("#new-password-error").wait_for()
    assert "too common" in page.locator("#new-password-error").text_content()

    page.get_by_label("New password", exact=True).fill("Another-Sturdy-Password-9")
    page.get_by_label("Repeat the new password").fill("Another-Sturdy-Password-8")
    page.get_by_role("button", name="Change password").click()
    assert page.locator("#confirm-password-error").text_content() == "The two new passwords are not the same."

    page.get_by_label("Repeat the new password").fill("Another-Sturdy-Password-9")
    page.get_by_role("button", name="Change password").click()
    page.locator("[data-notice]", has_text="Password changed.").wait_for()
    alice.refresh_from_db()
    assert alice.check_password("Another-Sturdy-Password-9")
    assert ClientSession.objects.get(pk=elsewhere.session.pk).revoked_at is not None
    page.reload()  # this browser's own session goes on
    wait_until_loaded(page)
    assert page.url.endswith("/dashboard/settings/")


@pytest.mark.parametrize("width", [375, 1440])
def test_every_page_fits_the_screen_and_signs_in_by_keyboard(page, assert_clean_page, alice, width):
    outreach_history(alice)
    MailboxFactory(client=alice, status=Mailbox.Status.DISCONNECTED, last_error="invalid_grant")
    page.set_viewport_size({"width": width, "height": 800})
    page.goto("/dashboard/")
    page.wait_for_url("**/dashboard/login/**")
    expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
    # Keyboard only: the email field has focus, Tab moves to the password, Enter submits.
    page.keyboard.type(alice.email)
    page.keyboard.press("Tab")
    page.keyboard.type(DEFAULT_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/")
    for path in [
        "/dashboard/",
        "/dashboard/campaigns/",
        "/dashboard/replies/",
        "/dashboard/mailboxes/",
        "/dashboard/settings/",
    ]:
        page.goto(path)
        wait_until_loaded(page)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {width}px"
        for field in page.locator("main input:not([type=hidden]):not([tabindex='-1']), main select").all():
            field_id = field.get_attribute("id")
            labelled = field.evaluate("el => el.labels.length > 0 || !!el.closest('label')")
            assert labelled, f"{path}: {field_id or field.get_attribute('name')} has no label"
    assert Client.objects.count() == 1
