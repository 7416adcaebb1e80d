"""Recording events: unique human counts, machine counts apart, exact under concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from email_service.events.recording import record_event
from email_service.models import ClientDailyActivity, EmailEvent, EmailSendQueue, StepDailyStats
from tests.factories import ClientFactory, EmailSendQueueFactory

pytestmark = pytest.mark.django_db

SENT_AT = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # already 29 March in Paris


@pytest.fixture
def message():
    client = ClientFactory(timezone="Europe/Paris")
    email = EmailSendQueueFactory(client=client, status=EmailSendQueue.Status.SENT, sent_at=SENT_AT)
    record_event(message=email, event_type="sent", occurred_at=SENT_AT)
    return email


def step_row(message):
    return StepDailyStats.objects.get(client=message.client, campaign=message.campaign, sequence_number=1)


def test_a_send_counts_on_the_clients_local_day(message):
    row = step_row(message)
    assert (row.date.isoformat(), row.sent) == ("2026-03-29", 1)
    assert ClientDailyActivity.objects.get(client=message.client).sent == 1


def test_a_message_opened_three_times_counts_one_open_and_three_open_events(message):
    for hours in (1, 30, 60):
        record_event(message=message, event_type="open", occurred_at=SENT_AT + timedelta(hours=hours))
    message.refresh_from_db()
    assert message.open_count == 3
    assert message.first_opened_at == SENT_AT + timedelta(hours=1)
    assert step_row(message).opened == 1
    activity = {row.date.isoformat(): row.opens for row in ClientDailyActivity.objects.filter(client=message.client)}
    assert activity == {"2026-03-29": 1}
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 3


def test_machine_opens_are_counted_apart_and_not_as_opens(message):
    record_event(message=message, event_type="open", is_machine=True, machine_reason="apple_mpp")
    record_event(message=message, event_type="open", is_machine=True, machine_reason="apple_mpp")
    message.refresh_from_db()
    row = step_row(message)
    assert (row.opened, row.machine_opened, message.open_count) == (0, 1, 0)
    event = EmailEvent.objects.filter(event_type="open").first()
    assert (event.is_machine, event.machine_reason) == (True, "apple_mpp")


def test_events_copy_tenant_fields_from_the_message(message):
    event = record_event(message=message, event_type="click")
    assert (event.client_id, event.lead_id, event.campaign_id, event.mailbox_id, event.sequence_number) == (
        message.client_id,
        message.lead_id,
        message.campaign_id,
        message.mailbox_id,
        1,
    )


def test_a_repeated_dedupe_key_records_nothing_twice(message):
    assert record_event(message=message, event_type="reply", dedupe_key="reply:gmail-1") is not None
    assert record_event(message=message, event_type="reply", dedupe_key="reply:gmail-1") is None
    assert EmailEvent.objects.filter(event_type="reply").count() == 1
    assert step_row(message).replied == 1


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_opens_lose_nothing():
    client = ClientFactory()
    message = EmailSendQueueFactory(client=client, status="sent", sent_at=SENT_AT)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                record_event(message=EmailSendQueue.objects.get(pk=message.pk), event_type="open", tz_name="UTC")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_it) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    message.refresh_from_db()
    assert message.open_count == 80
    assert EmailEvent.objects.filter(message=message, event_type="open").count() == 80
    assert StepDailyStats.objects.get(client=client).opened == 1
    assert ClientDailyActivity.objects.get(client=client).opens == 1
