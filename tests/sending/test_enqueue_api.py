"""POST /api/email/send and /send/batch: validation, idempotency, leads, held and paused emails."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from email_service.inbound.suppression import suppress
from email_service.models import EmailEvent, EmailSendQueue, Lead, LeadMailboxAssignment, Mailbox
from email_service.sending.campaigns import pause_campaign
from email_service.sending.enqueue import MAX_BODY_BYTES
from tests.conftest import dashboard_api
from tests.factories import CampaignFactory, ClientFactory, LeadFactory, MailboxFactory
from tests.sending.conftest import payload

pytestmark = pytest.mark.django_db

SEND = "/api/email/send"
BATCH = "/api/email/send/batch"


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


def test_an_email_is_queued_on_the_leads_mailbox_and_answers_202(integration_api, alice, alice_mailbox):
    body = payload(alice, lead_first_name="Pat", lead_company="Prospect Inc")
    response = integration_api.post(SEND, body, format="json")
    assert response.status_code == 202, response.content
    answer = response.json()
    email = EmailSendQueue.objects.get(pk=answer["queue_id"])
    assert answer["status"] == "queued" and email.status == "queued"
    assert answer["mailbox_email"] == "sam@alice.test" and email.mailbox == alice_mailbox
    assert answer["scheduled_for"]
    assert email.campaign == alice.campaigns.get(is_default=True)
    lead = Lead.objects.get(pk=body["lead_id"])
    assert (lead.client, lead.email, lead.first_name, lead.company) == (
        alice,
        body["recipient_email"],
        "Pat",
        "Prospect Inc",
    )
    assert LeadMailboxAssignment.objects.get(lead=lead).mailbox == alice_mailbox
    assert EmailEvent.objects.filter(message=email, event_type="queued").count() == 1


def test_the_same_step_again_answers_200_with_the_existing_row_and_queues_nothing(
    integration_api, alice, alice_mailbox
):
    body = payload(alice)
    first = integration_api.post(SEND, body, format="json")
    again = integration_api.post(SEND, {**body, "email_subject": "Changed"}, format="json")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["queue_id"] == first.json()["queue_id"]
    assert again.json()["created"] is False
    assert EmailSendQueue.objects.count() == 1
    assert EmailEvent.objects.filter(event_type="queued").count() == 1


def test_the_next_step_of_a_lead_uses_the_same_mailbox(integration_api, alice):
    MailboxFactory.create_batch(3, client=alice)
    body = payload(alice)
    first = integration_api.post(SEND, body, format="json").json()
    second = integration_api.post(SEND, {**body, "sequence_number": 2}, format="json").json()
    assert second["mailbox_email"] == first["mailbox_email"]
    assert LeadMailboxAssignment.objects.count() == 1


def test_new_leads_are_spread_over_the_clients_mailboxes(integration_api, alice):
    boxes = MailboxFactory.create_batch(3, client=alice)
    MailboxFactory(client=alice, status=Mailbox.Status.DISCONNECTED)
    for _ in range(9):
        assert integration_api.post(SEND, payload(alice), format="json").status_code == 202
    per_mailbox = {box.email: EmailSendQueue.objects.filter(mailbox=box).count() for box in boxes}
    assert sorted(per_mailbox.values()) == [3, 3, 3]


def test_a_client_without_a_usable_mailbox_gets_its_email_held_with_the_reason(integration_api, alice):
    MailboxFactory(client=alice, status=Mailbox.Status.DISCONNECTED)
    response = integration_api.post(SEND, payload(alice), format="json")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["status_reason"]) == ("held", "no_usable_mailbox")
    assert EmailSendQueue.objects.get().status == "held"


def test_an_email_of_a_paused_campaign_is_accepted_paused(integration_api, alice, alice_mailbox):
    campaign = CampaignFactory(client=alice)
    pause_campaign(campaign=campaign)
    response = integration_api.post(SEND, payload(alice, campaign_id=str(campaign.pk)), format="json")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["status_reason"]) == ("paused", "campaign_paused")


def test_send_at_in_the_future_is_when_the_email_is_scheduled(integration_api, alice, alice_mailbox):
    later = datetime.now(UTC) + timedelta(days=2)
    answer = integration_api.post(SEND, payload(alice, send_at=later.isoformat()), format="json").json()
    assert datetime.fromisoformat(answer["scheduled_for"]) == later


def test_an_email_due_outside_the_window_is_scheduled_for_the_next_opening(integration_api, alice, alice_mailbox):
    alice.timezone, alice.sending_days = "Europe/Paris", ["mon"]
    alice.window_start_minute, alice.window_end_minute = 9 * 60, 17 * 60
    alice.save()
    sunday_noon = datetime(2030, 6, 2, 10, 0, tzinfo=UTC)  # 12:00 in Paris, a Sunday
    answer = integration_api.post(SEND, payload(alice, send_at=sunday_noon.isoformat()), format="json").json()
    assert datetime.fromisoformat(answer["scheduled_for"]) == datetime(2030, 6, 3, 7, 0, tzinfo=UTC)


# ---------------------------------------------------------------- validation, one error each


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("lead_id", ..., "required"),
        ("client_id", ..., "required"),
        ("recipient_email", ..., "required"),
        ("email_body", ..., "required"),
        ("sequence_number", ..., "required"),
        ("email_subject", ..., "required"),
        ("lead_id", "not-a-uuid", "invalid"),
        ("recipient_email", "not-an-address", "invalid"),
        ("recipient_email", "pat@", "invalid"),
        ("sequence_number", 0, "min_value"),
        ("sequence_number", -3, "min_value"),
        ("sequence_number", "two", "invalid"),
        ("email_body", "   ", "blank"),
        ("send_at", "next tuesday", "invalid"),
    ],
)
def test_a_malformed_field_is_a_400_naming_it(integration_api, alice, alice_mailbox, field, value, code):
    body = assert_error(integration_api.post(SEND, payload(alice, **{field: value}), format="json"), 400, code)
    assert body["field"] == field
    assert not EmailSendQueue.objects.exists()


def test_a_body_that_is_not_json_is_a_400(integration_api):
    response = integration_api.post(SEND, "lead_id=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code in (400, 415)
    assert set(response.json()) >= {"detail", "code"}


def test_an_html_body_over_the_limit_is_a_413(integration_api, alice, alice_mailbox):
    big = "<p>" + "x" * MAX_BODY_BYTES + "</p>"
    response = integration_api.post(SEND, payload(alice, email_body=big), format="json")
    body = assert_error(response, 413, "body_too_large")
    assert body["field"] == "email_body"
    assert not EmailSendQueue.objects.exists()


def test_a_body_just_under_the_limit_is_accepted(integration_api, alice, alice_mailbox):
    body = "<p>" + "é" * ((MAX_BODY_BYTES - 8) // 2) + "</p>"
    assert integration_api.post(SEND, payload(alice, email_body=body), format="json").status_code == 202


def test_an_unknown_client_is_a_404(integration_api):
    fake = ClientFactory.build(pk=uuid.uuid4())
    assert_error(integration_api.post(SEND, payload(fake), format="json"), 404, "client_not_found")


def test_an_inactive_client_is_a_409(integration_api, alice, alice_mailbox):
    alice.is_active = False
    alice.save()
    assert_error(integration_api.post(SEND, payload(alice), format="json"), 409, "client_inactive")


def test_a_lead_of_another_client_is_refused(integration_api, alice, charlie, alice_mailbox):
    charlies_lead = LeadFactory(client=charlie)
    body = payload(alice, lead_id=str(charlies_lead.pk), recipient_email=charlies_lead.email)
    assert_error(integration_api.post(SEND, body, format="json"), 409, "lead_of_another_client")
    assert not EmailSendQueue.objects.exists()
    assert Lead.objects.get(pk=charlies_lead.pk).client == charlie


def test_a_known_lead_with_a_different_address_is_refused(integration_api, alice, alice_mailbox):
    lead = LeadFactory(client=alice)
    body = payload(alice, lead_id=str(lead.pk), recipient_email="someone-else@prospect.test")
    assert_error(integration_api.post(SEND, body, format="json"), 409, "lead_email_mismatch")


def test_a_campaign_of_another_client_is_a_404(integration_api, alice, charlie, alice_mailbox):
    charlies_campaign = charlie.campaigns.get(is_default=True)
    body = payload(alice, campaign_id=str(charlies_campaign.pk))
    assert_error(integration_api.post(SEND, body, format="json"), 404, "campaign_not_found")
    body = payload(alice, campaign_id=str(uuid.uuid4()))
    assert_error(integration_api.post(SEND, body, format="json"), 404, "campaign_not_found")


@pytest.mark.parametrize("reason", ["unsubscribed", "bounced", "replied", "manual"])
def test_a_suppressed_address_is_refused(integration_api, alice, alice_mailbox, reason):
    suppress(client_id=alice.pk, email="Pat@Prospect.test", reason=reason)
    body = payload(alice, recipient_email="pat@prospect.test")
    assert_error(integration_api.post(SEND, body, format="json"), 409, "recipient_suppressed")
    assert not EmailSendQueue.objects.exists()


@pytest.mark.parametrize("status", [Lead.Status.REPLIED, Lead.Status.BOUNCED, Lead.Status.UNSUBSCRIBED])
def test_a_lead_who_replied_bounced_or_unsubscribed_gets_no_next_step(integration_api, alice, alice_mailbox, status):
    lead = LeadFactory(client=alice, status=status)
    body = payload(alice, lead_id=str(lead.pk), recipient_email=lead.email, sequence_number=2)
    body = assert_error(integration_api.post(SEND, body, format="json"), 409, "recipient_suppressed")
    assert body["reason"] == status


def test_another_clients_suppression_does_not_apply(integration_api, alice, charlie, alice_mailbox):
    suppress(client_id=charlie.pk, email="pat@prospect.test", reason="unsubscribed")
    response = integration_api.post(SEND, payload(alice, recipient_email="pat@prospect.test"), format="json")
    assert response.status_code == 202


def test_a_dashboard_token_cannot_queue_email(alice, alice_mailbox):
    response = dashboard_api(alice).post(SEND, payload(alice), format="json")
    assert response.status_code == 403
    assert not EmailSendQueue.objects.exists()


def test_no_api_key_is_a_401(api, alice):
    assert api.post(SEND, payload(alice), format="json").status_code == 401


# ---------------------------------------------------------------- batch


def test_a_batch_answers_one_result_per_item_in_order_each_on_its_own(integration_api, alice, alice_mailbox):
    existing = payload(alice)
    integration_api.post(SEND, existing, format="json")
    items = [
        payload(alice),
        payload(alice, recipient_email="broken"),
        existing,
        payload(alice, client_id=str(uuid.uuid4())),
        payload(alice, email_body="<p>" + "x" * MAX_BODY_BYTES + "</p>"),
        payload(alice, sequence_number=3),
    ]
    response = integration_api.post(BATCH, {"emails": items}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == [202, 400, 200, 404, 413, 202]
    assert [r["index"] for r in results] == list(range(6))
    assert results[1]["code"] == "invalid" and results[1]["field"] == "recipient_email"
    assert results[3]["code"] == "client_not_found"
    assert results[4]["code"] == "body_too_large"
    assert (body["queued"], body["existing"], body["rejected"]) == (2, 1, 3)
    assert EmailSendQueue.objects.count() == 3
    assert {str(pk) for pk in EmailSendQueue.objects.values_list("pk", flat=True)} == {
        r["queue_id"] for r in results if r["queue_id"]
    }


def test_a_batch_of_more_than_500_is_refused_whole(integration_api, alice):
    response = integration_api.post(BATCH, {"emails": [payload(alice)] * 501}, format="json")
    assert_error(response, 400, "max_length")
    assert not EmailSendQueue.objects.exists()


def test_an_empty_or_shapeless_batch_is_a_400(integration_api):
    assert_error(integration_api.post(BATCH, {"emails": []}, format="json"), 400, "min_length")
    assert integration_api.post(BATCH, {"emails": "nope"}, format="json").status_code == 400
    assert integration_api.post(BATCH, {}, format="json").status_code == 400


# ---------------------------------------------------------------- status


def test_status_lists_a_leads_emails_and_client_id_narrows_it(integration_api, alice, charlie, alice_mailbox):
    body = payload(alice)
    integration_api.post(SEND, body, format="json")
    integration_api.post(SEND, {**body, "sequence_number": 2}, format="json")
    answer = integration_api.get(f"/api/email/status/{body['lead_id']}").json()
    assert [e["sequence_number"] for e in answer["emails"]] == [1, 2]
    assert answer["emails"][0]["mailbox_email"] == "sam@alice.test"
    assert integration_api.get(f"/api/email/status/{body['lead_id']}", {"client_id": alice.pk}).status_code == 200
    response = integration_api.get(f"/api/email/status/{body['lead_id']}", {"client_id": charlie.pk})
    assert_error(response, 404, "lead_not_found")


def test_the_batch_route_and_send_route_are_in_the_schema(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/email/send", "/api/email/send/batch"} <= set(schema["paths"])
