"""The Gmail history poller, through the local Google sandbox: real RFC 822 answers, classified and counted once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from email_service.gmail.client import GmailClient, GoogleConfig, MailboxCredentials
from email_service.inbound import replies
from email_service.inbound.replies import poll_mailbox
from email_service.models import EmailEvent, EmailSendQueue, Lead, Suppression
from google_sandbox.testing import TEST_ACCOUNT, TEST_SCOPES, make_message
from tests.factories import EmailSendQueueFactory, LeadFactory
from tests.tracking import inbound_mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def mailbox(connect_mailbox, alice):
    box = connect_mailbox(alice, TEST_ACCOUNT)
    assert poll_mailbox(mailbox=box).examined == 0  # the first poll only sets the cursor
    assert box.history_id
    return box


def gmail(google_sandbox, settings) -> GmailClient:
    tokens = google_sandbox.issue_tokens(TEST_ACCOUNT, TEST_SCOPES)
    return GmailClient(
        GoogleConfig.from_settings(),
        MailboxCredentials(access_token=tokens["access_token"], refresh_token=tokens["refresh_token"], expiry=None),
    )


@pytest.fixture
def sequence(google_sandbox, settings, mailbox, alice):
    """Step 1 sent through Gmail for real (as the sending pipeline does), step 2 waiting."""
    lead = LeadFactory(client=alice, email="pat@prospect.test")
    with gmail(google_sandbox, settings) as client:
        sent = client.send_raw(
            make_message(to=lead.email, subject="Quick question", message_id="<oree-1@company.test>")
        )
    first = EmailSendQueueFactory(
        client=alice,
        lead=lead,
        mailbox=mailbox,
        status=EmailSendQueue.Status.SENT,
        sent_at=timezone.now() - timedelta(hours=2),
        gmail_message_id=sent.gmail_id,
        gmail_thread_id=sent.thread_id,
        rfc_message_id=sent.rfc822_message_id,
        message_id="<oree-1@company.test>",
    )
    follow_up = EmailSendQueueFactory(client=alice, lead=lead, mailbox=mailbox, sequence_number=2, status="queued")
    return first, follow_up


def args(first):
    return {"sender": "pat@prospect.test", "to": TEST_ACCOUNT, "original_id": first.rfc_message_id}


def test_a_persons_reply_is_recorded_once_stops_the_sequence_and_our_own_send_is_not_a_reply(
    google_sandbox, mailbox, sequence, alice
):
    first, follow_up = sequence
    google_sandbox.deliver(TEST_ACCOUNT, inbound_mail.person_reply(**args(first)), thread_id=first.gmail_thread_id)
    result = poll_mailbox(mailbox=mailbox)
    assert result.recorded == 1
    event = EmailEvent.objects.get(event_type="reply")
    assert (event.message_id, event.client_id, event.detail["source"]) == (first.pk, alice.pk, "gmail")
    assert event.detail["snippet"].startswith("Hi Sam")
    follow_up.refresh_from_db()
    first.lead.refresh_from_db()
    assert (follow_up.status, follow_up.status_reason) == ("cancelled", "lead_replied")
    assert first.lead.status == Lead.Status.REPLIED
    # Seen again (a second poll, or a resync) it counts nothing more.
    mailbox.history_id = "1"
    poll_mailbox(mailbox=mailbox)
    assert EmailEvent.objects.filter(event_type__in=["reply", "auto_reply", "bounce"]).count() == 1
    assert alice.step_stats.get(sequence_number=1).replied == 1


def test_gmails_vacation_answer_is_an_auto_reply_and_the_sequence_goes_on(google_sandbox, mailbox, sequence):
    first, follow_up = sequence
    google_sandbox.deliver(TEST_ACCOUNT, inbound_mail.gmail_vacation(**args(first)), thread_id=first.gmail_thread_id)
    poll_mailbox(mailbox=mailbox)
    assert EmailEvent.objects.get(message=first, event_type="auto_reply")
    assert not EmailEvent.objects.filter(event_type="reply").exists()
    follow_up.refresh_from_db()
    assert follow_up.status == "queued"


@pytest.mark.parametrize("auto_submitted", [True, False])
def test_outlooks_automatic_reply_outside_the_thread_is_matched_by_in_reply_to_and_can_pause(
    google_sandbox, mailbox, sequence, alice, auto_submitted
):
    alice.pause_on_auto_reply = True
    alice.save()
    first, follow_up = sequence
    raw = inbound_mail.outlook_automatic_reply(**args(first), auto_submitted=auto_submitted)
    google_sandbox.deliver(TEST_ACCOUNT, raw)  # Exchange answers in a new thread
    poll_mailbox(mailbox=mailbox)
    assert EmailEvent.objects.get(event_type="auto_reply").message_id == first.pk
    follow_up.refresh_from_db()
    assert (follow_up.status, follow_up.status_reason) == ("paused", "lead_auto_replied")


def test_a_hard_bounce_marks_the_lead_suppresses_the_address_and_cancels_the_rest(
    google_sandbox, mailbox, sequence, alice
):
    first, follow_up = sequence
    raw = inbound_mail.bounce_dsn(
        mailbox=TEST_ACCOUNT, recipient=first.recipient_email, original_id=first.rfc_message_id, status="5.1.1"
    )
    google_sandbox.deliver(TEST_ACCOUNT, raw, thread_id=first.gmail_thread_id)
    poll_mailbox(mailbox=mailbox)
    event = EmailEvent.objects.get(event_type="bounce")
    assert (event.is_machine, event.detail["bounce_status"], event.detail["final"]) == (False, "5.1.1", True)
    first.lead.refresh_from_db()
    follow_up.refresh_from_db()
    assert first.lead.status == Lead.Status.BOUNCED
    assert (follow_up.status, follow_up.status_reason) == ("cancelled", "lead_bounced")
    assert Suppression.objects.get(client=alice).reason == "bounced"
    assert alice.step_stats.get(sequence_number=1).bounced == 1


def test_a_transient_4xx_bounce_is_kept_but_not_final(google_sandbox, mailbox, sequence, alice):
    first, follow_up = sequence
    raw = inbound_mail.bounce_dsn(
        mailbox=TEST_ACCOUNT, recipient=first.recipient_email, original_id=first.rfc_message_id, status="4.2.2"
    )
    google_sandbox.deliver(TEST_ACCOUNT, raw)  # not in the thread: matched through the DSN's original headers
    poll_mailbox(mailbox=mailbox)
    event = EmailEvent.objects.get(event_type="bounce")
    assert (event.message_id, event.is_machine, event.machine_reason) == (first.pk, True, "transient_bounce")
    follow_up.refresh_from_db()
    first.lead.refresh_from_db()
    assert follow_up.status == "queued" and first.lead.status == Lead.Status.ACTIVE
    assert not Suppression.objects.exists()
    assert not alice.step_stats.filter(bounced__gt=0).exists()


def test_mail_that_answers_nothing_we_sent_is_ignored(google_sandbox, mailbox, sequence):
    google_sandbox.deliver(
        TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, sender="news@elsewhere.test", message_id="<n@x>")
    )
    assert poll_mailbox(mailbox=mailbox).recorded == 0
    assert not EmailEvent.objects.filter(event_type__in=["reply", "auto_reply", "bounce"]).exists()


def test_history_is_read_page_by_page_before_the_cursor_moves(google_sandbox, mailbox, sequence, monkeypatch):
    first, _ = sequence
    monkeypatch.setattr(replies, "HISTORY_PAGE_SIZE", 1)
    for n in range(3):
        raw = inbound_mail.person_reply(**args(first)).replace(b"Message-ID: <CAKx=", f"Message-ID: <p{n}-".encode())
        google_sandbox.deliver(TEST_ACCOUNT, raw, thread_id=first.gmail_thread_id)
    before = mailbox.history_id
    assert poll_mailbox(mailbox=mailbox).recorded == 3
    assert int(mailbox.history_id) > int(before)


def test_a_stale_cursor_resynchronises_from_recent_threads(google_sandbox, mailbox, sequence):
    first, _ = sequence
    google_sandbox.deliver(TEST_ACCOUNT, inbound_mail.person_reply(**args(first)), thread_id=first.gmail_thread_id)
    google_sandbox.expire_history(TEST_ACCOUNT)
    result = poll_mailbox(mailbox=mailbox)
    assert result.resynced and result.recorded == 1
    assert EmailEvent.objects.get(event_type="reply").message_id == first.pk


def test_a_reply_reported_by_n8n_and_found_by_the_poller_counts_once(
    google_sandbox, mailbox, sequence, integration_api, alice
):
    first, _ = sequence
    delivered = google_sandbox.deliver(
        TEST_ACCOUNT, inbound_mail.person_reply(**args(first)), thread_id=first.gmail_thread_id
    )
    response = integration_api.post(
        "/api/track/reply",
        {
            "gmail_thread_id": first.gmail_thread_id,
            "gmail_message_id": delivered.gmail_id,
            "from_email": "pat@prospect.test",
        },
        format="json",
    )
    assert response.status_code == 201
    assert poll_mailbox(mailbox=mailbox).recorded == 0
    assert EmailEvent.objects.filter(event_type="reply").count() == 1


def test_a_transient_bounce_stays_out_of_the_clients_replies_feed(google_sandbox, mailbox, sequence, alice):
    from email_service.dashboard.stats import replies_feed

    first, _ = sequence
    raw = inbound_mail.bounce_dsn(
        mailbox=TEST_ACCOUNT, recipient=first.recipient_email, original_id=first.rfc_message_id, status="4.2.2"
    )
    google_sandbox.deliver(TEST_ACCOUNT, raw)
    poll_mailbox(mailbox=mailbox)
    assert EmailEvent.objects.filter(event_type="bounce", is_machine=True).exists()
    assert replies_feed(client=alice).results == []
    # A person's reply afterwards is in the feed, alone.
    google_sandbox.deliver(TEST_ACCOUNT, inbound_mail.person_reply(**args(first)))
    poll_mailbox(mailbox=mailbox)
    assert [entry["kind"] for entry in replies_feed(client=alice).results] == ["reply"]


def test_a_revoked_grant_found_by_the_poller_disconnects_the_mailbox_with_the_reason(google_sandbox, mailbox, sequence):
    from email_service.mailboxes import lifecycle as mailboxes

    _, follow_up = sequence
    google_sandbox.revoke_grants(TEST_ACCOUNT)
    assert replies.poll_mailbox_by_id(mailbox_id=mailbox.pk) is None
    mailbox.refresh_from_db()
    follow_up.refresh_from_db()
    assert mailbox.status == "disconnected"
    assert mailbox.last_error == mailboxes.REASON_REVOKED_BY_GOOGLE
    assert follow_up.status == "held"


def test_another_gmail_error_of_the_poller_is_shown_on_the_mailbox_and_cleared_by_the_next_poll(
    google_sandbox, mailbox, sequence
):
    from google_sandbox.models import FAULT_BACKEND_ERROR, OP_HISTORY

    google_sandbox.add_fault(OP_HISTORY, FAULT_BACKEND_ERROR, count=20, mailbox=TEST_ACCOUNT)
    assert replies.poll_mailbox_by_id(mailbox_id=mailbox.pk) is None
    mailbox.refresh_from_db()
    assert mailbox.status != "disconnected"
    assert mailbox.last_error.startswith(replies.POLL_ERROR_PREFIX) and mailbox.last_error_at is not None
    assert "token" not in mailbox.last_error.lower()
    google_sandbox.clear_faults()
    assert replies.poll_mailbox_by_id(mailbox_id=mailbox.pk) is not None
    mailbox.refresh_from_db()
    assert mailbox.last_error == "" and mailbox.last_error_at is None
