"""Every row of the outcome table, against the Google sandbox through the real Google client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from email_service.gmail.client import SentMessage
from email_service.models import ClientDailyActivity, EmailEvent, EmailSendQueue, Mailbox, StepDailyStats
from email_service.sending import dispatch
from google_sandbox.models import (
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_BACKEND_ERROR,
    FAULT_DAILY_LIMIT,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_SEND,
)
from tests.factories import LeadFactory
from tests.sending.gmail import fresh, queue, turn

pytestmark = pytest.mark.django_db


def test_accepted_the_row_is_sent_with_gmail_ids_an_event_and_rollups(sandbox, mailbox):
    email = queue(mailbox, subject="Quick question")
    assert turn(mailbox) == "sent"
    email = fresh(email)
    [received] = sandbox.sent_messages("sam@alice.test")
    assert email.status == "sent" and email.sent_at is not None
    assert (email.gmail_message_id, email.gmail_thread_id) == (received.gmail_id, received.thread_id)
    assert email.rfc_message_id == received.message_id == email.message_id
    assert received.header("X-Oree-Queue-Id") == str(email.pk)
    assert received.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert received.header("To") == email.recipient_email
    assert EmailEvent.objects.filter(message=email, event_type="sent").count() == 1
    assert StepDailyStats.objects.get(client=mailbox.client).sent == 1
    assert fresh(mailbox).sent_today == 1


def test_recording_an_accepted_send_is_one_statement_and_a_second_recording_writes_nothing(sandbox, mailbox):
    Mailbox.objects.filter(pk=mailbox.pk).update(last_error="earlier 503", last_error_at=timezone.now())
    mailbox.refresh_from_db()
    email = queue(mailbox, status="sending", message_id="<q1@alice.test>")
    sent = SentMessage(gmail_id="g1", thread_id="t1", label_ids=("SENT",), rfc822_message_id="<q1@alice.test>")

    with CaptureQueriesContext(connection) as queries:
        assert dispatch.record_sent(email=email, sent=sent, built=None, mailbox=mailbox, client=mailbox.client)
    assert len(queries) == 1  # row, event, both rollups and the mailbox's error reset: one statement
    email = fresh(email)
    assert (email.status, email.gmail_message_id, email.gmail_thread_id) == ("sent", "g1", "t1")
    event = EmailEvent.objects.get(message=email, event_type="sent")
    assert event.dedupe_key == f"sent:{email.pk}" and event.detail == {
        "gmail_message_id": "g1",
        "gmail_thread_id": "t1",
    }
    assert (event.client_id, event.mailbox_id, event.campaign_id) == (email.client_id, mailbox.pk, email.campaign_id)
    assert StepDailyStats.objects.get(client=mailbox.client).sent == 1
    assert ClientDailyActivity.objects.get(client=mailbox.client).sent == 1
    assert fresh(mailbox).last_error == ""

    # Learnt twice (a resolver and the sender): the second recording changes nothing at all.
    Mailbox.objects.filter(pk=mailbox.pk).update(last_error="a later error")
    assert not dispatch.record_sent(email=email, sent=sent, built=None, mailbox=mailbox, client=mailbox.client)
    assert EmailEvent.objects.filter(message=email, event_type="sent").count() == 1
    assert StepDailyStats.objects.get(client=mailbox.client).sent == 1
    assert ClientDailyActivity.objects.get(client=mailbox.client).sent == 1
    assert fresh(mailbox).last_error == "a later error"


def test_a_follow_up_lands_in_the_same_gmail_thread_under_the_id_gmail_stored(sandbox, mailbox):
    sandbox.set_replace_message_ids("sam@alice.test", True)
    lead = LeadFactory(client=mailbox.client)
    first = queue(mailbox, lead=lead, subject="Quick question")
    second = queue(mailbox, lead=lead, sequence_number=2, subject="")
    assert turn(mailbox) == "sent"
    assert turn(mailbox, timezone.now() + timedelta(seconds=1)) == "sent"
    one, two = sandbox.sent_messages("sam@alice.test")
    first, second = fresh(first), fresh(second)
    assert first.rfc_message_id == one.message_id != first.message_id  # Gmail replaced ours
    assert two.thread_id == one.thread_id == second.gmail_thread_id
    assert two.header("In-Reply-To") == one.message_id
    assert two.header("References") == one.message_id
    assert two.header("Subject") == "Re: Quick question"


def test_rate_limited_the_row_waits_for_the_retry_time_and_the_mailbox_cools_down(sandbox, mailbox):
    retry_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    sandbox.add_fault(OP_SEND, FAULT_RATE_LIMIT, retry_at=retry_at.isoformat().replace("+00:00", "Z"))
    email = queue(mailbox)
    assert turn(mailbox) == "rate_limited"
    email, mailbox = fresh(email), fresh(mailbox)
    assert (email.status, email.status_reason, email.attempts) == ("queued", "rate_limited", 0)
    assert email.next_attempt_at == retry_at and mailbox.cooldown_until == retry_at
    assert mailbox.sent_today == 0
    assert dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="w", now=retry_at).claim is not None
    assert sandbox.sent_messages("sam@alice.test") == []


def test_daily_limit_the_mailbox_is_limited_until_its_next_local_day_and_its_rows_wait(sandbox, mailbox):
    mailbox.client.timezone = "Europe/Paris"
    mailbox.client.save()
    sandbox.add_fault(OP_SEND, FAULT_DAILY_LIMIT)
    email, other = queue(mailbox), queue(mailbox)
    assert turn(mailbox) == "mailbox_daily_limit"
    mailbox, email = fresh(mailbox), fresh(email)
    assert mailbox.status == "limited"
    local_midnight = mailbox.cooldown_until.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert (local_midnight.hour, local_midnight.minute) == (0, 0)
    assert (email.status, email.status_reason, email.next_attempt_at) == (
        "queued",
        "mailbox_daily_limit",
        mailbox.cooldown_until,
    )
    soon = timezone.now() + timedelta(seconds=5)
    refused = dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="w", now=soon)
    assert (refused.claim, refused.skipped, refused.rest_until) == (None, "daily_cap", mailbox.cooldown_until)
    assert fresh(other).status == "queued"
    assert dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="w", now=mailbox.cooldown_until).claim


def test_authorisation_revoked_disconnects_the_mailbox_and_holds_its_rows(sandbox, mailbox):
    email, other = queue(mailbox), queue(mailbox)
    sandbox.revoke_grants("sam@alice.test")
    assert turn(mailbox) == "mailbox_disconnected"
    mailbox = fresh(mailbox)
    assert mailbox.status == "disconnected" and "revoked" in mailbox.status_reason.lower()
    for row in (fresh(email), fresh(other)):
        assert (row.status, row.status_reason) == ("held", "mailbox_disconnected")
    assert not EmailSendQueue.objects.filter(status="failed").exists()


def test_an_invalid_message_fails_with_googles_reason(sandbox, mailbox):
    email = queue(mailbox)
    EmailSendQueue.objects.filter(pk=email.pk).update(recipient_email="")
    assert turn(mailbox) == "failed"
    email = fresh(email)
    assert (email.status, email.status_reason) == ("failed", "rejected_by_gmail")
    assert "Recipient address required" in email.last_error
    assert EmailEvent.objects.filter(message=email, event_type="failed").count() == 1
    assert fresh(mailbox).sent_today == 0


def test_a_5xx_is_an_unknown_outcome_resolved_by_asking_the_mailbox_before_any_resend(sandbox, mailbox):
    sandbox.add_fault(OP_SEND, FAULT_BACKEND_ERROR)
    email = queue(mailbox)
    assert turn(mailbox) == "outcome_unknown"
    email = fresh(email)
    assert (email.status, email.status_reason) == ("sending", "outcome_unknown")
    assert dispatch.resolve_email(email_id=email.pk) == "not_due"  # Gmail gets time to index first
    assert dispatch.resolve_email(email_id=email.pk, now=email.lease_expires_at) == "requeued"
    email = fresh(email)
    assert (email.status, email.attempts) == ("queued", 1)
    assert turn(mailbox, email.next_attempt_at) == "sent"
    assert len(sandbox.sent_messages("sam@alice.test")) == 1
    assert fresh(email).message_id == email.message_id  # the same Message-ID on the resend


def test_a_dropped_connection_after_gmail_accepted_is_found_and_not_resent(sandbox, mailbox):
    sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_CLOSE)
    email = queue(mailbox)
    assert turn(mailbox) == "outcome_unknown"
    assert dispatch.resolve_email(email_id=email.pk, now=fresh(email).lease_expires_at) == "sent"
    email = fresh(email)
    [received] = sandbox.sent_messages("sam@alice.test")
    assert (email.status, email.gmail_message_id) == ("sent", received.gmail_id)
    assert EmailEvent.objects.filter(message=email, event_type="sent").count() == 1


def test_a_message_whose_id_gmail_replaced_is_found_by_its_queue_id_header(sandbox, mailbox):
    sandbox.set_replace_message_ids("sam@alice.test", True)
    sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_CLOSE)
    email = queue(mailbox)
    assert turn(mailbox) == "outcome_unknown"
    assert dispatch.resolve_email(email_id=email.pk, now=fresh(email).lease_expires_at) == "sent"
    assert len(sandbox.sent_messages("sam@alice.test")) == 1


def test_an_expired_lease_of_a_crashed_worker_is_checked_in_the_mailbox(sandbox, mailbox):
    from email_service.mailboxes.clients import gmail_for
    from email_service.sending.message_builder import build_message

    email = queue(mailbox)
    claimed = dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="doomed", now=timezone.now()).claim
    gmail_for(mailbox).send_raw(build_message(email=claimed.email, mailbox=mailbox).raw)  # then the worker "dies"
    later = fresh(email).lease_expires_at + timedelta(seconds=1)
    assert dispatch.sweep_queue(now=later)["resolved"] == 1
    assert fresh(email).status == "sent"
    assert len(sandbox.sent_messages("sam@alice.test")) == 1


def test_repeated_transient_failures_back_off_then_fail_after_the_documented_attempts(sandbox, mailbox):
    sandbox.add_fault(OP_SEND, FAULT_UNAVAILABLE, count=None)
    email = queue(mailbox)
    now, delays = timezone.now(), []
    for attempt in range(1, dispatch.MAX_SEND_ATTEMPTS + 1):
        outcome = turn(mailbox, now)
        email = fresh(email)
        if attempt < dispatch.MAX_SEND_ATTEMPTS:
            assert (outcome, email.status, email.attempts) == ("retrying", "queued", attempt)
            delays.append((email.next_attempt_at - timezone.now()).total_seconds())
            now = email.next_attempt_at
    assert (outcome, email.status, email.status_reason) == ("failed", "failed", "too_many_attempts")
    # Exponential with ±20% jitter: attempt n waits base·2^(n-1), give or take a fifth
    # (measured from "now", so a test-run's few seconds may be missing from the low side).
    base = settings.SEND_RETRY_BASE_SECONDS
    for attempt, delay in enumerate(delays, start=1):
        expected = min(base * 2 ** (attempt - 1), dispatch.BACKOFF_MAX_SECONDS)
        assert 0.8 * expected - 5 <= delay <= 1.2 * expected, (attempt, delay, expected)
    assert EmailEvent.objects.filter(message=email, event_type="failed").count() == 1
    assert sandbox.sent_messages("sam@alice.test") == []


def test_a_paused_mailbox_is_not_sent_from(sandbox, mailbox):
    queue(mailbox)
    Mailbox.objects.filter(pk=mailbox.pk).update(status="paused")
    assert dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="w").skipped == "mailbox_not_sending"
