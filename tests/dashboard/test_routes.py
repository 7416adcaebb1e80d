"""Dashboard actions and parameters: pause/resume, disconnecting a mailbox, bounded query parameters."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from email_service.events.recording import record_event
from email_service.mailboxes.credentials import credentials_for
from email_service.models import ClientDailyActivity, EmailSendQueue, StepDailyStats
from tests.factories import CampaignFactory, EmailSendQueueFactory, MailboxFactory

pytestmark = pytest.mark.django_db


def test_pausing_a_campaign_pauses_its_unsent_emails_and_resuming_brings_them_back(alice, alice_api):
    campaign = CampaignFactory(client=alice, name="Q3")
    queued = EmailSendQueueFactory(client=alice, campaign=campaign)
    sent = EmailSendQueueFactory(client=alice, campaign=campaign, sequence_number=2, status="sent")
    other = EmailSendQueueFactory(client=alice, sequence_number=3)
    body = alice_api.post(f"/api/client/campaigns/{campaign.pk}/pause").json()
    assert body == {"id": str(campaign.pk), "name": "Q3", "status": "paused", "emails_affected": 1}
    statuses = dict(EmailSendQueue.objects.values_list("pk", "status"))
    assert (statuses[queued.pk], statuses[sent.pk], statuses[other.pk]) == ("paused", "sent", "queued")
    alice.refresh_from_db()
    assert alice.is_active  # the earlier implementation locked the client out instead
    assert alice_api.get("/api/client/campaigns").json()["campaigns"][1]["status"] == "paused"
    body = alice_api.post(f"/api/client/campaigns/{campaign.pk}/resume").json()
    assert (body["status"], body["emails_affected"]) == ("active", 1)
    queued.refresh_from_db()
    assert queued.status == "queued"


def test_disconnecting_a_mailbox_holds_its_unsent_emails(alice, alice_api):
    mailbox = MailboxFactory(client=alice)
    queued = EmailSendQueueFactory(client=alice, mailbox=mailbox)
    response = alice_api.delete(f"/api/client/mailboxes/{mailbox.pk}")
    assert response.json() == {
        "id": str(mailbox.pk),
        "status": "disconnected",
        "emails_held": 1,
        "revoked_at_google": None,  # this mailbox never held a token
    }
    mailbox.refresh_from_db()
    queued.refresh_from_db()
    assert (mailbox.status, queued.status, queued.status_reason) == ("disconnected", "held", "mailbox_disconnected")
    listed = alice_api.get("/api/client/mailboxes").json()["mailboxes"][0]
    assert (listed["status"], listed["remaining_today"]) == ("disconnected", 0)


def test_disconnecting_a_connected_mailbox_revokes_its_grant_at_google(
    alice, alice_api, connect_mailbox, google_sandbox
):
    mailbox = connect_mailbox(alice, "alice.sender@alice.test")
    refresh_token = credentials_for(mailbox).refresh_token
    assert google_sandbox.state.grant_for_refresh_token(refresh_token) is not None
    body = alice_api.delete(f"/api/client/mailboxes/{mailbox.pk}").json()
    assert (body["status"], body["revoked_at_google"]) == ("disconnected", True)
    assert google_sandbox.state.grant_for_refresh_token(refresh_token) is None
    mailbox.refresh_from_db()
    assert (mailbox.refresh_token_encrypted, mailbox.access_token_encrypted) == ("", "")


def test_charlie_cannot_disconnect_alices_connected_mailbox(alice, charlie_api, connect_mailbox, google_sandbox):
    mailbox = connect_mailbox(alice, "alice.sender@alice.test")
    refresh_token = credentials_for(mailbox).refresh_token
    assert charlie_api.delete(f"/api/client/mailboxes/{mailbox.pk}").status_code == 404
    assert google_sandbox.state.grant_for_refresh_token(refresh_token) is not None
    mailbox.refresh_from_db()
    assert mailbox.status == "active"


def test_an_unknown_id_is_a_404_and_a_malformed_one_never_reaches_a_view(alice_api):
    assert alice_api.post(f"/api/client/campaigns/{uuid.uuid4()}/pause").status_code == 404
    assert alice_api.delete(f"/api/client/mailboxes/{uuid.uuid4()}").status_code == 404
    response = alice_api.delete("/api/client/mailboxes/not-a-uuid")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/client/timeline", {"days": "abc"}, "days"),
        ("/api/client/timeline", {"days": "0"}, "days"),
        ("/api/client/timeline", {"days": "367"}, "days"),
        ("/api/client/timeline", {"days": "-5"}, "days"),
        ("/api/client/timeline", {"days": "99999999999999999999999"}, "days"),
        ("/api/client/replies", {"page": "x"}, "page"),
        ("/api/client/replies", {"page": "0"}, "page"),
        ("/api/client/replies", {"page_size": "101"}, "page_size"),
        ("/api/client/replies", {"page_size": "0"}, "page_size"),
        ("/api/client/replies", {"page_size": "1e3"}, "page_size"),
        ("/api/client/replies", {"page": "101", "page_size": "100"}, "page"),  # deeper than 10,000: use the cursor
        ("/api/client/replies", {"cursor": "!!!"}, "cursor"),
        ("/api/client/replies", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ("/api/client/replies", {"cursor": "x" * 201}, "cursor"),
        ("/api/client/replies", {"page": "2", "cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHwx"}, "page"),
    ],
)
def test_a_bad_paging_or_days_parameter_is_a_400_naming_it(alice_api, url, params, field):
    response = alice_api.get(url, params)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field


def test_the_bounds_themselves_are_accepted(alice_api):
    assert len(alice_api.get("/api/client/timeline", {"days": 366}).json()["days"]) == 366
    assert alice_api.get("/api/client/replies", {"page_size": 100}).json()["page_size"] == 100


def test_the_cursor_walks_entries_sharing_one_instant_without_skipping_or_repeating(alice, alice_api, charlie):
    moment = timezone.now()
    replies = []
    for n in range(5):
        message = EmailSendQueueFactory(client=alice, sequence_number=n + 1, status="sent")
        replies.append(record_event(message=message, event_type="reply", occurred_at=moment))
    record_event(message=EmailSendQueueFactory(client=charlie, status="sent"), event_type="reply", occurred_at=moment)
    seen, cursor = [], None
    while True:
        params = {"page_size": 2} | ({"cursor": cursor} if cursor else {})
        body = alice_api.get("/api/client/replies", params).json()
        seen += [row["id"] for row in body["results"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == sorted((event.pk for event in replies), reverse=True)


def test_every_dashboard_route_needs_a_token(api):
    for url in ("stats", "campaigns", "replies", "timeline", "mailboxes", "settings"):
        response = api.get(f"/api/client/{url}")
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_verify_rollups_reports_drift_exits_non_zero_and_repairs_on_request(alice, capsys):
    message = EmailSendQueueFactory(client=alice, status="sent")
    record_event(message=message, event_type="sent")
    record_event(message=message, event_type="open")
    call_command("verify_rollups")
    StepDailyStats.objects.filter(client=alice).update(opened=2)
    with pytest.raises(CommandError, match="1 of 1 clients"):
        call_command("verify_rollups")
    assert "opened is 2, events say 1" in capsys.readouterr().out
    call_command("verify_rollups", "--repair")
    call_command("verify_rollups")
    assert StepDailyStats.objects.get(client=alice).opened == 1


def test_verify_rollups_sees_a_lost_increment_too(alice):
    message = EmailSendQueueFactory(client=alice, status="sent")
    record_event(message=message, event_type="sent")
    ClientDailyActivity.objects.filter(client=alice).delete()
    with pytest.raises(CommandError):
        call_command("verify_rollups", "--client", str(alice.pk))


def test_the_replies_feed_has_its_index():
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "email_service_emailevent")
    assert indexes["event_client_inbound_time"]["columns"] == ["client_id", "occurred_at", "id"]
    assert indexes["event_client_inbound_time"]["orders"] == ["ASC", "DESC", "DESC"]
