"""POST /api/email/send/batch done set-wise: a fixed number of queries, same answers as one by one."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from email_service.inbound.suppression import suppress
from email_service.models import EmailEvent, EmailSendQueue, LeadMailboxAssignment
from tests.factories import CampaignFactory, LeadFactory, MailboxFactory
from tests.sending.conftest import payload

pytestmark = pytest.mark.django_db

BATCH = "/api/email/send/batch"


def post_batch(api, items):
    response = api.post(BATCH, {"emails": items}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_batch_takes_the_same_number_of_queries_for_5_or_100_new_leads(integration_api, alice):
    MailboxFactory.create_batch(3, client=alice)
    post_batch(integration_api, [payload(alice)])  # the default campaign exists from here on
    with CaptureQueriesContext(connection) as small:
        assert post_batch(integration_api, [payload(alice) for _ in range(5)])["queued"] == 5
    with CaptureQueriesContext(connection) as large:
        assert post_batch(integration_api, [payload(alice) for _ in range(100)])["queued"] == 100
    assert len(large) == len(small) <= 20
    assert EmailSendQueue.objects.count() == EmailEvent.objects.filter(event_type="queued").count() == 106
    assert LeadMailboxAssignment.objects.count() == 106


def test_a_batch_spreads_its_new_leads_over_the_clients_mailboxes(integration_api, alice):
    boxes = MailboxFactory.create_batch(3, client=alice)
    post_batch(integration_api, [payload(alice) for _ in range(30)])
    assert sorted(EmailSendQueue.objects.filter(mailbox=box).count() for box in boxes) == [10, 10, 10]


def test_the_same_email_twice_in_one_batch_is_queued_once_and_both_answers_name_it(
    integration_api, alice, alice_mailbox
):
    item = payload(alice)
    body = post_batch(integration_api, [item, item, {**item, "sequence_number": 2}])
    first, repeat, follow_up = body["results"]
    assert (first["status"], repeat["status"], follow_up["status"]) == (202, 200, 202)
    assert repeat["queue_id"] == first["queue_id"]
    assert EmailSendQueue.objects.count() == 2
    assert follow_up["mailbox_email"] == first["mailbox_email"] == alice_mailbox.email


def test_a_batch_repeated_answers_the_existing_rows_and_queues_nothing_new(integration_api, alice, alice_mailbox):
    items = [payload(alice) for _ in range(4)]
    first = post_batch(integration_api, items)
    again = post_batch(integration_api, items)
    assert (again["queued"], again["existing"]) == (0, 4)
    assert [r["queue_id"] for r in again["results"]] == [r["queue_id"] for r in first["results"]]
    assert EmailSendQueue.objects.count() == 4
    assert EmailEvent.objects.filter(event_type="queued").count() == 4


def test_each_batch_item_is_checked_like_a_single_send(integration_api, alice, charlie, alice_mailbox):
    charlies_lead = LeadFactory(client=charlie)
    charlies_campaign = CampaignFactory(client=charlie)
    known = LeadFactory(client=alice, email="pat@prospect.test")
    suppress(client_id=alice.pk, email="gone@prospect.test", reason="unsubscribed")
    items = [
        payload(alice, lead_id=str(charlies_lead.pk)),
        payload(alice, campaign_id=str(charlies_campaign.pk)),
        payload(alice, recipient_email="Gone@Prospect.test"),
        payload(alice, lead_id=str(known.pk), recipient_email="someone-else@prospect.test"),
        payload(alice, lead_id=str(known.pk), recipient_email="pat@prospect.test"),
    ]
    results = post_batch(integration_api, items)["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        (409, "lead_of_another_client"),
        (404, "campaign_not_found"),
        (409, "recipient_suppressed"),
        (409, "lead_email_mismatch"),
        (202, None),
    ]
    assert EmailSendQueue.objects.filter(client=charlie).count() == 0
    assert EmailSendQueue.objects.count() == 1
