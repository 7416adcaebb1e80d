"""Rules the database itself enforces, so no code path can break them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from email_service.models import Campaign, EmailSendQueue, LeadMailboxAssignment, Suppression
from tests.factories import (
    ClientFactory,
    EmailSendQueueFactory,
    LeadFactory,
    LeadMailboxAssignmentFactory,
    MailboxFactory,
)

pytestmark = pytest.mark.django_db


def test_a_second_queue_row_for_the_same_step_is_refused_by_the_database():
    first = EmailSendQueueFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        EmailSendQueue.objects.create(
            client=first.client,
            campaign=first.campaign,
            lead=first.lead,
            sequence_number=first.sequence_number,
            recipient_email=first.recipient_email,
            body_html="<p>again</p>",
        )
    assert EmailSendQueue.objects.count() == 1


def test_the_same_step_in_another_campaign_is_a_different_row():
    first = EmailSendQueueFactory()
    other = Campaign.objects.create(client=first.client, name="Second")
    EmailSendQueueFactory(client=first.client, lead=first.lead, campaign=other, mailbox=first.mailbox)
    assert EmailSendQueue.objects.count() == 2


def test_sequence_number_below_one_is_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        EmailSendQueueFactory(sequence_number=0)


def test_a_lead_has_one_mailbox_assignment_at_most():
    assignment = LeadMailboxAssignmentFactory()
    other_mailbox = MailboxFactory(client=assignment.client)
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadMailboxAssignment.objects.create(lead=assignment.lead, client=assignment.client, mailbox=other_mailbox)


def test_a_client_has_one_default_campaign_at_most():
    client = ClientFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Campaign.objects.create(client=client, name="Another default", is_default=True)


def test_an_inverted_sending_window_is_refused():
    client = ClientFactory()
    client.window_start_minute, client.window_end_minute = 600, 540
    with pytest.raises(IntegrityError), transaction.atomic():
        client.save()


def test_a_daily_limit_above_two_thousand_is_refused():
    client = ClientFactory()
    client.mailbox_daily_limit = 2001
    with pytest.raises(IntegrityError), transaction.atomic():
        client.save()


def test_one_gmail_address_serves_one_client():
    mailbox = MailboxFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        MailboxFactory(email=mailbox.email)


def test_an_address_is_suppressed_once_per_client():
    client = ClientFactory()
    Suppression.objects.create(client=client, email="x@y.test", reason=Suppression.Reason.BOUNCED)
    with pytest.raises(IntegrityError), transaction.atomic():
        Suppression.objects.create(client=client, email="x@y.test", reason=Suppression.Reason.UNSUBSCRIBED)
    Suppression.objects.create(client=ClientFactory(), email="x@y.test", reason=Suppression.Reason.BOUNCED)


def test_tracking_tokens_are_random_and_unique_per_row():
    first, second = EmailSendQueueFactory(), EmailSendQueueFactory()
    assert first.unsubscribe_token != second.unsubscribe_token
    assert len(first.unsubscribe_token) >= 22


def test_password_is_stored_as_a_pbkdf2_sha256_hash():
    client = ClientFactory(password="Another-Good-Pass-77")
    assert client.password.startswith("pbkdf2_sha256$")
    assert "Another-Good-Pass-77" not in client.password
    assert client.check_password("Another-Good-Pass-77")
    assert not client.check_password("wrong")


def test_lead_ids_are_the_ids_n8n_sends():
    lead = LeadFactory()
    assert lead.pk is not None
