"""Unsubscribe at /u/<token>: GET only asks, POST (RFC 8058 one-click or the page's button) unsubscribes."""

from __future__ import annotations

import pytest

from email_service.inbound.suppression import is_suppressed
from email_service.models import EmailEvent, EmailSendQueue, Lead, Suppression
from tests.factories import EmailSendQueueFactory
from tests.tracking.conftest import sent_message

pytestmark = pytest.mark.django_db

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def follow_up(message):
    return EmailSendQueueFactory(
        client=message.client, lead=message.lead, mailbox=message.mailbox, sequence_number=2, status="queued"
    )


def test_get_shows_a_confirmation_page_and_changes_nothing(browser, message, follow_up):
    response = browser.get(f"/u/{message.unsubscribe_token}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "Unsubscribe?" in body and 'name="List-Unsubscribe" value="One-Click"' in body
    assert not EmailEvent.objects.filter(event_type="unsubscribe").exists()
    assert not Suppression.objects.exists()
    follow_up.refresh_from_db()
    assert follow_up.status == "queued"


def test_a_one_click_post_form_encoded_unsubscribes_without_redirect(browser, message, follow_up):
    # What Gmail sends (RFC 8058): no cookie, no CSRF token, form-encoded body.
    response = browser.post(
        f"/u/{message.unsubscribe_token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert "Location" not in response
    assert "You are unsubscribed" in response.content.decode()
    message.lead.refresh_from_db()
    follow_up.refresh_from_db()
    assert message.lead.status == Lead.Status.UNSUBSCRIBED
    assert (follow_up.status, follow_up.status_reason) == (EmailSendQueue.Status.CANCELLED, "lead_unsubscribed")
    assert is_suppressed(client_id=message.client_id, email=message.recipient_email.upper())
    event = EmailEvent.objects.get(event_type="unsubscribe")
    assert (event.message_id, event.client_id) == (message.pk, message.client_id)


def test_a_multipart_one_click_post_unsubscribes(browser, message):
    response = browser.post(f"/u/{message.unsubscribe_token}", data=ONE_CLICK)  # multipart/form-data
    assert response.status_code == 200
    assert Suppression.objects.get().reason == "unsubscribed"


def test_the_pages_button_unsubscribes(browser, message):
    response = browser.post(f"/u/{message.unsubscribe_token}", data={**ONE_CLICK, "button": "1"})
    assert response.status_code == 200
    assert EmailEvent.objects.get(event_type="unsubscribe").detail == {"source": "page"}


def test_unsubscribing_twice_counts_once_and_answers_200(browser, message, alice):
    for _ in range(3):
        assert browser.post(f"/u/{message.unsubscribe_token}", data=ONE_CLICK).status_code == 200
    assert EmailEvent.objects.filter(event_type="unsubscribe").count() == 1
    assert alice.step_stats.get().unsubscribed == 1
    assert "You are unsubscribed" in browser.get(f"/u/{message.unsubscribe_token}").content.decode()


def test_a_post_without_the_one_click_body_changes_nothing(browser, message):
    for data, content_type in (
        ("", "application/x-www-form-urlencoded"),
        ('{"a":1}', "application/json"),
        ("List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
    ):
        response = browser.post(f"/u/{message.unsubscribe_token}", data=data, content_type=content_type)
        assert response.status_code == 400
    assert not Suppression.objects.exists()


def test_an_unknown_token_is_a_404_page(browser):
    assert browser.get("/u/not-a-token").status_code == 404
    assert browser.post("/u/not-a-token", data=ONE_CLICK).status_code == 404


def test_unsubscribing_from_alice_leaves_charlies_sends_to_the_same_address(browser, message, charlie):
    charlie_message = sent_message(charlie)
    charlie_next = EmailSendQueueFactory(
        client=charlie,
        lead=charlie_message.lead,
        recipient_email=message.recipient_email,
        sequence_number=2,
        status="queued",
    )
    browser.post(f"/u/{message.unsubscribe_token}", data=ONE_CLICK)
    charlie_next.refresh_from_db()
    assert charlie_next.status == "queued"
    assert not is_suppressed(client_id=charlie.pk, email=message.recipient_email)
