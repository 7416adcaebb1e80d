"""Disconnecting a mailbox: on request (revoked at Google) and when Google revokes it; emails held, never lost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from email_service.gmail.client import AuthorizationRevoked, MailboxCredentials
from email_service.mailboxes.credentials import credentials_for, store_credentials
from email_service.mailboxes.lifecycle import (
    Disconnection,
    disconnect_mailbox_by_request,
    mailbox_authorization_revoked,
    mailbox_gmail,
    verify_mailbox_connection,
)
from email_service.models import EmailSendQueue, Mailbox
from google_sandbox import FAULT_INVALID_GRANT, OP_TOKEN_REFRESH
from google_sandbox.testing import Api
from tests.factories import EmailSendQueueFactory

pytestmark = pytest.mark.django_db

ADDRESS = "alice.sender@alice.test"


def expire_access_token(mailbox: Mailbox) -> None:
    tokens = credentials_for(mailbox)
    store_credentials(
        mailbox=mailbox,
        credentials=MailboxCredentials(
            access_token="expired-access-token", refresh_token=None,
            expiry=timezone.now() - timedelta(minutes=1), scopes=tokens.scopes,
        ),
    )  # fmt: skip


@pytest.fixture
def alices_mailbox(alice, connect_mailbox):
    mailbox = connect_mailbox(alice, ADDRESS)
    queued = EmailSendQueueFactory.create_batch(2, client=alice, mailbox=mailbox)
    sent = EmailSendQueueFactory(client=alice, mailbox=mailbox, status=EmailSendQueue.Status.SENT)
    return mailbox, queued, sent


def assert_held(queued, sent) -> None:
    rows = {row.pk: row for row in EmailSendQueue.objects.all()}
    assert [(rows[r.pk].status, rows[r.pk].status_reason) for r in queued] == [("held", "mailbox_disconnected")] * 2
    assert rows[sent.pk].status == "sent"


def test_disconnecting_on_request_revokes_the_grant_at_google_and_holds_unsent_emails(alices_mailbox, google_sandbox):
    mailbox, queued, sent = alices_mailbox
    tokens = credentials_for(mailbox)

    result = disconnect_mailbox_by_request(mailbox=mailbox)

    assert result == Disconnection(held_emails=2, revoked=True)
    assert google_sandbox.state.grant_for_refresh_token(tokens.refresh_token) is None
    assert Api(google_sandbox, tokens.access_token).get("/profile").status_code == 401
    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert (stored.status, stored.status_reason) == ("disconnected", "disconnected by the client")
    assert stored.disconnected_at is not None
    assert (stored.access_token_encrypted, stored.refresh_token_encrypted) == ("", "")
    assert_held(queued, sent)


def test_when_google_cannot_be_reached_the_mailbox_still_stops_and_disconnecting_again_revokes(
    alices_mailbox, google_sandbox, google_settings
):
    mailbox, queued, sent = alices_mailbox
    tokens = credentials_for(mailbox)
    revoke_uri = google_settings.GOOGLE_REVOKE_URI
    google_settings.GOOGLE_REVOKE_URI = "http://127.0.0.1:9/revoke"  # nothing listens there

    first = disconnect_mailbox_by_request(mailbox=mailbox)

    assert first == Disconnection(held_emails=2, revoked=False)
    assert Mailbox.objects.get(pk=mailbox.pk).status == "disconnected"
    assert credentials_for(Mailbox.objects.get(pk=mailbox.pk)) == tokens  # kept to retry the revocation
    assert google_sandbox.state.grant_for_refresh_token(tokens.refresh_token) is not None
    assert_held(queued, sent)

    google_settings.GOOGLE_REVOKE_URI = revoke_uri
    second = disconnect_mailbox_by_request(mailbox=Mailbox.objects.get(pk=mailbox.pk))

    assert second == Disconnection(held_emails=0, revoked=True)
    assert google_sandbox.state.grant_for_refresh_token(tokens.refresh_token) is None
    assert Mailbox.objects.get(pk=mailbox.pk).refresh_token_encrypted == ""


def test_a_grant_already_gone_at_google_still_disconnects(alices_mailbox, google_sandbox):
    mailbox, queued, sent = alices_mailbox
    google_sandbox.revoke_grants(ADDRESS)

    assert disconnect_mailbox_by_request(mailbox=mailbox) == Disconnection(held_emails=2, revoked=True)
    assert Mailbox.objects.get(pk=mailbox.pk).status == "disconnected"
    assert_held(queued, sent)


def test_invalid_grant_on_refresh_disconnects_the_mailbox_holds_its_emails_and_says_why(alices_mailbox, google_sandbox):
    mailbox, queued, sent = alices_mailbox
    expire_access_token(mailbox)
    google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_INVALID_GRANT, mailbox=ADDRESS)

    with pytest.raises(AuthorizationRevoked):
        verify_mailbox_connection(mailbox=Mailbox.objects.get(pk=mailbox.pk))

    assert google_sandbox.faults_applied(kind=FAULT_INVALID_GRANT, op=OP_TOKEN_REFRESH) == 1
    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert stored.status == "disconnected"
    assert "invalid_grant" in stored.status_reason and "reconnect" in stored.status_reason
    assert stored.last_error == stored.status_reason and stored.last_error_at is not None
    assert_held(queued, sent)


def test_access_removed_by_the_user_in_google_disconnects_the_mailbox_on_the_next_call(alices_mailbox, google_sandbox):
    mailbox, queued, sent = alices_mailbox
    google_sandbox.revoke_grants(ADDRESS)  # the access token dies with the grant: 401, refresh, invalid_grant

    with pytest.raises(AuthorizationRevoked), mailbox_gmail(mailbox) as gmail:
        gmail.get_profile()

    assert Mailbox.objects.get(pk=mailbox.pk).status == "disconnected"
    assert_held(queued, sent)


def test_other_errors_do_not_disconnect(alices_mailbox, google_sandbox):
    mailbox, queued, _sent = alices_mailbox
    google_sandbox.add_fault("profile", "unavailable")

    with pytest.raises(Exception, match="unavailable"), mailbox_gmail(mailbox) as gmail:
        gmail.get_profile()

    assert Mailbox.objects.get(pk=mailbox.pk).status == "active"
    assert set(EmailSendQueue.objects.filter(pk__in=[r.pk for r in queued]).values_list("status", flat=True)) == {
        "queued"
    }


def test_a_refreshed_token_is_written_back_through_the_mailbox_client(alices_mailbox, google_sandbox):
    mailbox, _queued, _sent = alices_mailbox
    refresh_token = credentials_for(mailbox).refresh_token
    expire_access_token(mailbox)

    profile = verify_mailbox_connection(mailbox=Mailbox.objects.get(pk=mailbox.pk))

    assert profile.email_address == ADDRESS
    stored = credentials_for(Mailbox.objects.get(pk=mailbox.pk))
    assert stored.access_token not in (None, "expired-access-token")
    assert stored.refresh_token == refresh_token and stored.expiry > timezone.now()
    assert Api(google_sandbox, stored.access_token).get("/profile").status_code == 200


def test_a_revocation_reported_with_another_reason_records_it(alices_mailbox):
    mailbox, _queued, _sent = alices_mailbox

    held = mailbox_authorization_revoked(mailbox=mailbox, error=AuthorizationRevoked("x", google_reason="authError"))

    assert held == 2
    assert "authError" in Mailbox.objects.get(pk=mailbox.pk).status_reason


def test_an_operator_disconnects_from_the_admin_and_google_forgets_the_grant(client, alices_mailbox, google_sandbox):
    mailbox, queued, sent = alices_mailbox
    tokens = credentials_for(mailbox)
    client.force_login(User.objects.create_superuser("operator", "op@oreestats.test", "Operator-Pass-991"))

    response = client.post(
        reverse("admin:email_service_mailbox_changelist"),
        {"action": "disconnect_selected", "_selected_action": [str(mailbox.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Disconnected: 1" in response.content.decode()
    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert (stored.status, stored.status_reason) == ("disconnected", "disconnected by an operator")
    assert google_sandbox.state.grant_for_refresh_token(tokens.refresh_token) is None
    assert_held(queued, sent)
