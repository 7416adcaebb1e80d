"""POST /api/track/reply: n8n reports a reply; matched by thread, Message-ID, then lead; idempotent."""

from __future__ import annotations

import uuid

import pytest

from email_service.models import EmailEvent, Lead
from tests.factories import EmailSendQueueFactory
from tests.tracking.conftest import sent_message

pytestmark = pytest.mark.django_db

URL = "/api/track/reply"


@pytest.fixture
def thread(alice):
    first = sent_message(alice, gmail_thread_id="thr-1", rfc_message_id="<a1@mail.gmail.com>", hours_ago=48)
    second = sent_message(
        alice,
        lead=first.lead,
        sequence_number=2,
        gmail_thread_id="thr-1",
        rfc_message_id="<a2@mail.gmail.com>",
        mailbox=first.mailbox,
    )
    third = EmailSendQueueFactory(
        client=alice, lead=first.lead, mailbox=first.mailbox, sequence_number=3, status="queued"
    )
    return first, second, third


def reply(integration_api, **fields):
    body = {
        "from_email": "pat@prospect.test",
        "subject": "Re: Quick question",
        "body": "Sounds good, call me.",
        "received_at": "2026-04-01T10:00:00Z",
        **fields,
    }
    return integration_api.post(URL, body, format="json")


def test_a_reply_by_thread_is_recorded_on_the_latest_email_and_stops_the_sequence(integration_api, thread):
    first, second, third = thread
    response = reply(integration_api, gmail_thread_id="thr-1")
    assert response.status_code == 201
    assert response.json()["queue_id"] == str(second.pk)
    assert response.json()["cancelled_followups"] == 1
    third.refresh_from_db()
    first.lead.refresh_from_db()
    assert (third.status, third.status_reason) == ("cancelled", "lead_replied")
    assert first.lead.status == Lead.Status.REPLIED
    event = EmailEvent.objects.get(event_type="reply")
    assert event.detail["snippet"] == "Sounds good, call me."
    assert event.detail["source"] == "webhook"


def test_the_same_reply_again_is_a_200_and_counts_once(integration_api, thread, alice):
    assert reply(integration_api, gmail_thread_id="thr-1").status_code == 201
    again = reply(integration_api, gmail_thread_id="thr-1")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert EmailEvent.objects.filter(event_type="reply").count() == 1
    assert sum(alice.step_stats.values_list("replied", flat=True)) == 1


def test_a_reply_is_matched_by_our_message_id_in_in_reply_to(integration_api, thread):
    first, _, _ = thread
    response = reply(integration_api, in_reply_to="<a1@mail.gmail.com>")
    assert response.status_code == 201 and response.json()["queue_id"] == str(first.pk)


def test_a_reply_is_matched_by_lead_and_client(integration_api, thread, alice):
    _, second, _ = thread
    response = reply(integration_api, lead_id=str(second.lead_id), client_id=str(alice.pk))
    assert response.status_code == 201 and response.json()["queue_id"] == str(second.pk)


def test_charlies_client_id_cannot_reach_alices_lead(integration_api, thread, charlie):
    response = reply(integration_api, lead_id=str(thread[0].lead_id), client_id=str(charlie.pk))
    assert response.status_code == 404
    assert response.json()["code"] == "reply_not_matched"
    assert not EmailEvent.objects.filter(event_type="reply").exists()


def test_nothing_matching_is_a_404(integration_api, thread):
    assert reply(integration_api, gmail_thread_id="nope").status_code == 404
    assert reply(integration_api, in_reply_to="<x@y>").status_code == 404
    assert reply(integration_api, lead_id=str(uuid.uuid4()), client_id=str(uuid.uuid4())).status_code == 404


def test_a_report_without_any_key_or_with_bad_fields_is_a_400(integration_api, thread):
    response = reply(integration_api)
    assert response.status_code == 400 and response.json()["code"] == "reply_target_missing"
    response = reply(integration_api, lead_id=str(thread[0].lead_id))
    assert response.status_code == 400 and response.json()["code"] == "client_id_required"
    assert reply(integration_api, gmail_thread_id="thr-1", received_at="yesterday").status_code == 400


def test_the_reply_route_takes_the_api_key_only(api, alice_api, thread):
    assert reply(api, gmail_thread_id="thr-1").status_code == 401
    assert reply(alice_api, gmail_thread_id="thr-1").status_code == 403


def test_an_out_of_office_report_with_auto_submitted_is_an_auto_reply_and_the_sequence_goes_on(integration_api, thread):
    first, _second, third = thread
    response = reply(
        integration_api,
        gmail_thread_id="thr-1",
        subject="Out of Office: Quick question",
        body="I am away until Monday.",
        headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
    )
    assert response.status_code == 201, response.json()
    assert response.json()["kind"] == "auto_reply"
    third.refresh_from_db()
    first.lead.refresh_from_db()
    assert third.status == "queued" and first.lead.status == Lead.Status.ACTIVE
    assert not EmailEvent.objects.filter(event_type="reply").exists()


def test_a_mailer_daemon_report_with_a_5xx_status_is_a_hard_bounce(integration_api, thread):
    _first, _second, third = thread
    response = reply(
        integration_api,
        gmail_thread_id="thr-1",
        from_email="mailer-daemon@googlemail.com",
        subject="Delivery Status Notification (Failure)",
        body="Address not found. The response was: 550 5.1.1 The email account does not exist.",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["kind"] == "bounce"
    third.refresh_from_db()
    assert third.status == "cancelled"
    assert EmailEvent.objects.get(event_type="bounce").is_machine is False


def test_a_plain_answer_with_harmless_headers_stays_a_reply(integration_api, thread):
    response = reply(integration_api, gmail_thread_id="thr-1", headers={"Auto-Submitted": "no", "X-Mailer": "Gmail"})
    assert (response.status_code, response.json()["kind"]) == (201, "reply")


def test_a_report_cannot_smuggle_a_delivery_report_content_type(integration_api, thread):
    # The body is plain text: a claimed multipart/report with nothing in it is not a bounce.
    response = reply(
        integration_api,
        gmail_thread_id="thr-1",
        headers={"Content-Type": "multipart/report; report-type=delivery-status"},
    )
    assert (response.status_code, response.json()["kind"]) == (201, "reply")
