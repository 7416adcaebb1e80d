"""A follow-up whose Gmail thread is gone, a mailbox resting at its daily cap, and pacing on the database's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from email_service.models import EmailEvent
from email_service.sending import dispatch, pacing
from email_service.sending.windows import next_local_midnight
from tests.factories import LeadFactory
from tests.sending.gmail import fresh, queue, turn

pytestmark = pytest.mark.django_db


def test_a_follow_up_whose_gmail_thread_is_gone_goes_out_once_in_a_new_thread_with_the_reason(sandbox, mailbox):
    lead = LeadFactory(client=mailbox.client)
    first = queue(mailbox, lead=lead, subject="Quick question")
    second = queue(mailbox, lead=lead, sequence_number=2, subject="")
    assert turn(mailbox) == "sent"
    # Alice deleted the conversation in Gmail: the thread id we stored no longer exists there.
    type(first).objects.filter(pk=first.pk).update(gmail_thread_id="thread-deleted-by-alice")

    assert turn(mailbox, timezone.now() + timedelta(seconds=1)) == "sent"

    one, two = sandbox.sent_messages("sam@alice.test")
    second = fresh(second)
    assert (second.status, second.status_reason) == ("sent", dispatch.THREAD_MISSING)
    assert second.attempts == 1
    assert two.thread_id != one.thread_id and second.gmail_thread_id == two.thread_id
    # The recipient's copy still threads under the first email.
    assert two.header("In-Reply-To") == one.message_id
    assert two.header("Subject") == "Re: Quick question"
    event = EmailEvent.objects.get(message=second, event_type="sent")
    assert event.detail["note"] == dispatch.THREAD_MISSING


def test_a_mailbox_at_its_daily_cap_gets_no_turn_until_its_next_local_midnight(sandbox, mailbox):
    client = mailbox.client
    client.timezone = "America/New_York"
    client.save()
    mailbox.daily_limit = 1
    mailbox.save()
    queue(mailbox)
    waiting = queue(mailbox)
    cache.delete(f"oree:send-turn:{mailbox.pk}")
    assert dispatch.run_mailbox_turn(mailbox_id=mailbox.pk) == "sent"
    cache.delete(f"oree:send-turn:{mailbox.pk}")  # as if the next turn's countdown had run out
    type(mailbox).objects.filter(pk=mailbox.pk).update(next_send_at=None)

    assert dispatch.run_mailbox_turn(mailbox_id=mailbox.pk) == "daily_cap"

    midnight = next_local_midnight(client, timezone.now())
    key = cache.make_and_validate_key(f"oree:send-turn:{mailbox.pk}")
    ttl = cache._cache.get_client(key).ttl(key)
    assert abs(ttl - (midnight - timezone.now()).total_seconds()) < 5
    assert dispatch.dispatch_due() == 0  # beat and nudges start no refused turn meanwhile
    assert fresh(waiting).status == "queued"
    assert fresh(mailbox).sent_today == 1


def test_pacing_holds_on_the_database_clock_when_a_workers_clock_runs_an_hour_ahead(sandbox, mailbox, monkeypatch):
    queue(mailbox)
    queue(mailbox)
    first = dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="on-time")
    assert first.claim is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        (db_now,) = cursor.fetchone()
    assert abs((first.claim.reservation.granted_at - db_now).total_seconds()) < 5

    skewed = timezone.now() + timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: skewed)
    second = dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="an-hour-ahead")

    assert (second.claim, second.skipped) == (None, "paced")
    assert fresh(mailbox).sent_today == 1


def test_a_slot_without_a_given_time_is_taken_on_the_database_clock(sandbox, mailbox):
    granted = pacing.reserve_send_slot(mailbox=mailbox, client=mailbox.client)
    assert granted is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        (db_now,) = cursor.fetchone()
    interval = pacing.send_interval_seconds(mailbox)
    assert granted.next_send_at - granted.granted_at >= timedelta(seconds=interval * 0.9)
    assert abs((granted.granted_at - db_now).total_seconds()) < 5
    assert pacing.reserve_send_slot(mailbox=fresh(mailbox), client=mailbox.client) is None
