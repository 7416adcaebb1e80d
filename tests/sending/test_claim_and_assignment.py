"""Claiming under a lease, pause/resume, follow-ups waiting for their step, and mailboxes that stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from email_service.inbound.suppression import suppress
from email_service.mailboxes.lifecycle import disconnect_mailbox, pause_mailbox, resume_mailbox
from email_service.models import EmailSendQueue, Lead, LeadMailboxAssignment, Mailbox
from email_service.sending import dispatch
from email_service.sending.campaigns import pause_campaign, resume_campaign
from tests.factories import (
    CampaignFactory,
    EmailSendQueueFactory,
    LeadFactory,
    LeadMailboxAssignmentFactory,
    MailboxFactory,
)

pytestmark = pytest.mark.django_db


def claim(mailbox, now=None):
    return dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="test-worker", now=now or timezone.now())


def test_a_due_row_is_claimed_under_a_lease_with_its_message_id_fixed(alice, alice_mailbox):
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    turn = claim(alice_mailbox)
    assert turn.claim is not None and turn.claim.email.pk == email.pk
    email.refresh_from_db()
    assert (email.status, email.claimed_by, email.attempts) == ("sending", "test-worker", 1)
    assert email.lease_expires_at > timezone.now() + timedelta(seconds=60)
    assert email.message_id.startswith(f"<{email.pk.hex}.") and email.message_id.endswith("@alice.test>")
    alice_mailbox.refresh_from_db()
    assert alice_mailbox.sent_today == 1
    assert turn.next_turn_at == alice_mailbox.next_send_at


def test_a_row_is_claimed_once_and_the_mailbox_pace_stops_a_second_claim(alice, alice_mailbox):
    EmailSendQueueFactory.create_batch(2, client=alice, mailbox=alice_mailbox)
    now = timezone.now()
    assert claim(alice_mailbox, now).claim is not None
    second = claim(alice_mailbox, now + timedelta(milliseconds=100))
    assert second.claim is None and second.skipped == "paced"
    assert claim(alice_mailbox, now + timedelta(milliseconds=400)).claim is not None
    assert EmailSendQueue.objects.filter(status="sending").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_another_claim_is_skipped_not_waited_for(alice, alice_mailbox):
    first = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    second = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    EmailSendQueue.objects.filter(pk=second.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=1))
    with transaction.atomic():
        locked = EmailSendQueue.objects.select_for_update().get(pk=first.pk)
        import threading

        result = {}

        def other():
            try:
                result["turn"] = claim(alice_mailbox, timezone.now() + timedelta(seconds=2))
            finally:
                connection.close()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert locked.status == "queued"
    assert result["turn"].claim.email.pk == second.pk


def test_a_paused_campaigns_rows_are_not_claimed_and_resume_brings_them_back(alice, alice_mailbox):
    campaign = CampaignFactory(client=alice)
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox, campaign=campaign)
    assert pause_campaign(campaign=campaign) == 1
    assert claim(alice_mailbox).claim is None
    email.refresh_from_db()
    assert (email.status, email.status_reason) == ("paused", "campaign_paused")
    assert resume_campaign(campaign=campaign) == 1
    assert claim(alice_mailbox).claim.email.pk == email.pk


def test_pausing_does_not_touch_a_send_in_flight(alice, alice_mailbox):
    campaign = CampaignFactory(client=alice)
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox, campaign=campaign)
    assert claim(alice_mailbox).claim is not None
    pause_campaign(campaign=campaign)
    email.refresh_from_db()
    assert email.status == "sending"


def test_a_follow_up_waits_until_the_earlier_step_has_left(alice, alice_mailbox):
    lead = LeadFactory(client=alice)
    step1 = EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, sequence_number=1)
    step2 = EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, sequence_number=2)
    EmailSendQueue.objects.filter(pk=step1.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    turn = claim(alice_mailbox)
    assert turn.claim is None and turn.skipped == "nothing_due"
    EmailSendQueue.objects.filter(pk=step1.pk).update(status="sent")
    assert claim(alice_mailbox).claim.email.pk == step2.pk


def test_outside_the_window_nothing_is_claimed(alice, alice_mailbox):
    alice.timezone, alice.sending_days = "UTC", ["mon"]
    alice.save()
    EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    tuesday = datetime(2030, 3, 5, 12, 0, tzinfo=UTC)
    turn = claim(alice_mailbox, tuesday)
    assert turn.claim is None and turn.skipped == "window_closed"
    assert claim(alice_mailbox, datetime(2030, 3, 11, 0, 0, tzinfo=UTC)).claim is not None


def test_an_address_suppressed_after_enqueue_is_cancelled_at_claim_and_its_cap_unit_given_back(alice, alice_mailbox):
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    suppress(client_id=alice.pk, email=email.recipient_email, reason="unsubscribed")
    turn = claim(alice_mailbox)
    assert turn.claim is None and turn.skipped == "suppressed"
    email.refresh_from_db()
    alice_mailbox.refresh_from_db()
    assert (email.status, email.status_reason) == ("cancelled", "recipient_suppressed")
    assert alice_mailbox.sent_today == 0


def test_a_lead_who_replied_meanwhile_is_not_sent_the_next_step(alice, alice_mailbox):
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox, sequence_number=2)
    Lead.objects.filter(pk=email.lead_id).update(status=Lead.Status.REPLIED)
    assert claim(alice_mailbox).skipped == "suppressed"
    email.refresh_from_db()
    assert email.status == "cancelled"


# ---------------------------------------------------------------- mailboxes that stop


def test_a_lead_with_nothing_sent_moves_off_a_paused_mailbox(alice, alice_mailbox):
    other = MailboxFactory(client=alice)
    assignment = LeadMailboxAssignmentFactory(lead=LeadFactory(client=alice), mailbox=alice_mailbox)
    email = EmailSendQueueFactory(client=alice, lead=assignment.lead, mailbox=alice_mailbox)
    pause_mailbox(mailbox=alice_mailbox)
    dispatch.rehome_stranded_emails()
    email.refresh_from_db()
    assert (email.status, email.mailbox) == ("queued", other)
    assert LeadMailboxAssignment.objects.get(lead=assignment.lead).mailbox == other
    assert LeadMailboxAssignment.objects.count() == 1


def test_a_lead_mid_sequence_waits_for_its_disconnected_mailbox_and_goes_on_when_it_is_back(alice, alice_mailbox):
    MailboxFactory(client=alice)
    lead = LeadFactory(client=alice)
    LeadMailboxAssignmentFactory(lead=lead, mailbox=alice_mailbox)
    EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, status="sent")
    step2 = EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, sequence_number=2)
    assert disconnect_mailbox(mailbox=alice_mailbox, reason="revoked") == 1
    dispatch.rehome_stranded_emails()
    step2.refresh_from_db()
    assert (step2.status, step2.status_reason, step2.mailbox) == ("held", "waiting_for_mailbox", alice_mailbox)
    Mailbox.objects.filter(pk=alice_mailbox.pk).update(status="active")
    dispatch.rehome_stranded_emails()
    step2.refresh_from_db()
    assert (step2.status, step2.mailbox) == ("queued", alice_mailbox)


def test_a_paused_mailbox_mid_sequence_holds_and_resuming_releases(alice, alice_mailbox):
    lead = LeadFactory(client=alice)
    LeadMailboxAssignmentFactory(lead=lead, mailbox=alice_mailbox)
    EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, status="sent")
    step2 = EmailSendQueueFactory(client=alice, lead=lead, mailbox=alice_mailbox, sequence_number=2)
    pause_mailbox(mailbox=alice_mailbox)
    assert claim(alice_mailbox).skipped == "mailbox_not_sending"
    dispatch.rehome_stranded_emails()
    step2.refresh_from_db()
    assert (step2.status, step2.status_reason) == ("held", "waiting_for_mailbox")
    resume_mailbox(mailbox=alice_mailbox)
    dispatch.rehome_stranded_emails()
    assert claim(alice_mailbox).claim.email.pk == step2.pk


def test_held_emails_of_a_client_without_mailboxes_go_out_once_one_connects(integration_api, alice):
    from tests.sending.conftest import payload

    answer = integration_api.post("/api/email/send", payload(alice), format="json").json()
    assert answer["status"] == "held"
    mailbox = MailboxFactory(client=alice)
    dispatch.rehome_stranded_emails()
    email = EmailSendQueue.objects.get(pk=answer["queue_id"])
    assert (email.status, email.mailbox) == ("queued", mailbox)


def test_charlies_mailboxes_are_never_picked_for_alices_leads(alice, charlie):
    MailboxFactory(client=charlie)
    from email_service.sending.assignment import pick_mailbox

    assert pick_mailbox(client=alice) is None
    own = MailboxFactory(client=alice)
    assert pick_mailbox(client=alice) == own
