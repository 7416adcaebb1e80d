"""Connecting a Gmail mailbox: our routes, the real google-auth-oauthlib, and the sandbox over HTTP."""

from __future__ import annotations

import time
import urllib.parse

import pytest
from django.core import signing

from email_service.mailboxes.credentials import credentials_for, decrypt_secret, gmail_client_for
from email_service.mailboxes.lifecycle import disconnect_mailbox
from email_service.mailboxes.oauth import REQUESTED_SCOPES, STATE_SALT
from email_service.models import EmailSendQueue, Mailbox, OAuthState
from google_sandbox.testing import GMAIL_READONLY, GMAIL_SEND, TEST_ACCOUNT
from tests.factories import CampaignFactory, EmailSendQueueFactory, LeadFactory
from tests.oauth.conftest import consent, query_params

pytestmark = pytest.mark.django_db

SECOND_ACCOUNT = "second@example.com"


def test_alice_connects_a_mailbox_with_her_dashboard_token_and_its_tokens_work(
    alice, alice_api, initiate, api, google_sandbox
):
    url = initiate(alice_api, alice)
    asked = query_params(url)
    assert url.startswith(google_sandbox.auth_uri + "?")
    assert asked["scope"].split() == list(REQUESTED_SCOPES)
    assert (asked["access_type"], asked["prompt"], asked["code_challenge_method"]) == ("offline", "consent", "S256")
    state_row = OAuthState.objects.get(client=alice)
    verifier = decrypt_secret(state_row.code_verifier_encrypted)
    assert verifier and verifier not in url and verifier not in state_row.code_verifier_encrypted
    assert state_row.initiated_by == "client" and state_row.used_at is None

    response = api.get(f"/api/oauth/callback?{consent(url)}", HTTP_ACCEPT="application/json")

    assert response.status_code == 200, response.content
    body = response.json()
    mailbox = Mailbox.objects.get(client=alice)
    assert body == {
        "mailbox": {"id": str(mailbox.pk), "email": TEST_ACCOUNT, "status": "active"},
        "created": True,
        "resumed_emails": 0,
        "redirect_to": "/dashboard/mailboxes/",
    }
    assert mailbox.email == TEST_ACCOUNT and mailbox.connected_at is not None and mailbox.history_id
    assert {GMAIL_SEND, GMAIL_READONLY} <= set(mailbox.scopes.split())
    tokens = credentials_for(mailbox)
    assert tokens.access_token and tokens.refresh_token
    for token, column in [
        (tokens.access_token, mailbox.access_token_encrypted),
        (tokens.refresh_token, mailbox.refresh_token_encrypted),
    ]:
        assert token not in column and column.startswith("gAAAAA")
    with gmail_client_for(mailbox) as gmail:
        assert gmail.get_profile().email_address == TEST_ACCOUNT
    state_row.refresh_from_db()
    assert state_row.used_at is not None


def test_n8n_connects_with_the_api_key_and_the_browser_lands_on_the_dashboard(
    alice, integration_api, connect_through_google
):
    response = connect_through_google(integration_api, alice, json=False, return_to="/dashboard/mailboxes/?new=1")

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/mailboxes/?new=1"
    assert Mailbox.objects.get(client=alice).email == TEST_ACCOUNT
    assert OAuthState.objects.get(client=alice).initiated_by == "api_key"


def test_initiate_answers_json_when_asked(alice, alice_api, google_settings, google_sandbox):
    response = alice_api.get(f"/api/oauth/initiate/{alice.pk}", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["authorization_url"].startswith(google_sandbox.auth_uri + "?")


@pytest.mark.parametrize(
    ("credentials", "status"),
    [(None, 401), ("Bearer not-a-key", 401), ("Token abc", 401), ("Bearer a.b.c", 401)],
)
def test_initiate_is_refused_without_valid_credentials(alice, api, google_settings, credentials, status):
    if credentials:
        api.credentials(HTTP_AUTHORIZATION=credentials)

    response = api.get(f"/api/oauth/initiate/{alice.pk}")

    assert response.status_code == status
    assert set(response.json()) >= {"detail", "code"}
    assert not OAuthState.objects.exists()


def test_charlie_cannot_start_connecting_a_mailbox_to_alice(alice, charlie_api, google_settings):
    response = charlie_api.get(f"/api/oauth/initiate/{alice.pk}")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not OAuthState.objects.exists()


def test_the_api_key_cannot_start_for_an_unknown_or_disabled_client(alice, integration_api, google_settings):
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    assert integration_api.get(f"/api/oauth/initiate/{alice.pk}").status_code == 404
    assert integration_api.get("/api/oauth/initiate/00000000-0000-0000-0000-000000000000").status_code == 404
    assert not OAuthState.objects.exists()


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "dashboard", "/a\r\nb"],
)
def test_initiate_refuses_a_return_to_that_leaves_the_site(alice, alice_api, google_settings, return_to):
    response = alice_api.get(f"/api/oauth/initiate/{alice.pk}", {"return_to": return_to})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_return_to"
    assert not OAuthState.objects.exists()


def test_a_replayed_callback_is_refused_and_changes_nothing(alice, alice_api, initiate, api):
    query = consent(initiate(alice_api, alice))
    assert api.get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json").status_code == 200
    before = Mailbox.objects.values().get(client=alice)

    replay = api.get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json")

    assert replay.status_code == 400
    assert replay.json()["code"] == "state_used"
    assert Mailbox.objects.values().get(client=alice) == before


def test_a_tampered_state_is_refused_and_the_genuine_one_still_works(alice, alice_api, charlie, initiate, api):
    params = query_params(consent(initiate(alice_api, alice)))
    nonce = OAuthState.objects.get(client=alice).nonce
    genuine = params["state"]
    forgeries = [
        genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"),  # signature changed
        signing.dumps({"n": nonce, "c": str(charlie.pk)}, salt=STATE_SALT, key="not-our-secret-key-0123456789"),
        signing.dumps({"n": nonce, "c": str(charlie.pk)}, salt="another.salt"),
        "",
    ]
    for forged in forgeries:
        response = api.get(
            "/api/oauth/callback?" + urllib.parse.urlencode({**params, "state": forged}),
            HTTP_ACCEPT="application/json",
        )
        assert response.status_code == 400, forged
        assert response.json()["code"] == "invalid_state"
    assert not Mailbox.objects.exists()

    response = api.get("/api/oauth/callback?" + urllib.parse.urlencode(params), HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert Mailbox.objects.get().client == alice


def test_a_state_signed_for_charlie_cannot_redeem_alices_attempt(alice, alice_api, charlie, initiate, api):
    params = query_params(consent(initiate(alice_api, alice)))
    nonce = OAuthState.objects.get(client=alice).nonce
    # Properly signed (as if SECRET_KEY leaked nothing but the format): the row is alice's, not charlie's.
    rebound = signing.dumps({"n": nonce, "c": str(charlie.pk)}, salt=STATE_SALT)

    response = api.get(
        "/api/oauth/callback?" + urllib.parse.urlencode({**params, "state": rebound}), HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_state"
    assert not Mailbox.objects.exists()


def test_an_expired_state_is_refused(alice, alice_api, initiate, api, monkeypatch):
    params = query_params(consent(initiate(alice_api, alice)))
    row = OAuthState.objects.get(client=alice)
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 3600)
    old_state = signing.dumps({"n": row.nonce, "c": str(alice.pk)}, salt=STATE_SALT)
    monkeypatch.setattr(signing.time, "time", real_time)

    stale_signature = api.get(
        "/api/oauth/callback?" + urllib.parse.urlencode({**params, "state": old_state}), HTTP_ACCEPT="application/json"
    )
    OAuthState.objects.filter(pk=row.pk).update(expires_at=row.created_at)
    expired_row = api.get("/api/oauth/callback?" + urllib.parse.urlencode(params), HTTP_ACCEPT="application/json")

    assert (stale_signature.status_code, stale_signature.json()["code"]) == (400, "state_expired")
    assert (expired_row.status_code, expired_row.json()["code"]) == (400, "state_expired")
    assert not Mailbox.objects.exists()


def test_denied_consent_ends_on_a_clear_page_with_nothing_created(
    alice, alice_api, connect_through_google, google_sandbox
):
    google_sandbox.set_consent(deny=True)

    page = connect_through_google(alice_api, alice, json=False)

    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")
    assert page["Referrer-Policy"] == "no-referrer"
    html = page.content.decode()
    assert (
        "was not connected" in html and "Access was not granted" in html and 'data-oauth-error="access_denied"' in html
    )
    assert not Mailbox.objects.exists()


def test_denied_consent_as_json(alice, alice_api, connect_through_google, google_sandbox):
    google_sandbox.set_consent(deny=True)

    response = connect_through_google(alice_api, alice)

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Access was not granted on Google's consent screen, so no mailbox was connected.",
        "code": "access_denied",
    }


def test_a_grant_without_gmail_read_access_is_refused_and_revoked(
    alice, alice_api, connect_through_google, google_sandbox
):
    google_sandbox.set_consent(grant_only=[GMAIL_SEND, "openid", "https://www.googleapis.com/auth/userinfo.email"])

    response = connect_through_google(alice_api, alice)

    assert response.status_code == 400
    assert response.json()["code"] == "missing_scopes"
    assert "gmail.readonly" in response.json()["detail"]
    assert not Mailbox.objects.exists()
    assert google_sandbox.revoke_grants(TEST_ACCOUNT) == 0  # no live grant was left behind


def test_a_failed_code_exchange_is_refused_with_nothing_created(alice, alice_api, initiate, api, google_settings):
    query = consent(initiate(alice_api, alice))
    google_settings.GOOGLE_CLIENT_SECRET = "GOCSPX-wrong"

    response = api.get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "exchange_failed"
    assert not Mailbox.objects.exists()


def test_an_unreachable_token_endpoint_is_reported_without_creating_anything(
    alice, alice_api, initiate, api, google_settings
):
    query = consent(initiate(alice_api, alice))
    google_settings.GOOGLE_TOKEN_URI = "http://127.0.0.1:9/token"  # discard port: nothing listens

    response = api.get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json")

    assert response.status_code == 424
    assert response.json()["code"] == "google_unavailable"
    assert not Mailbox.objects.exists()


def test_a_second_mailbox_for_the_same_client_does_not_overwrite_the_first(
    alice, alice_api, connect_through_google, google_sandbox
):
    assert connect_through_google(alice_api, alice).status_code == 200
    first = Mailbox.objects.get(client=alice)
    first_tokens = credentials_for(first)
    google_sandbox.add_account(SECOND_ACCOUNT, "Second Sender")

    response = connect_through_google(alice_api, alice, login_hint=SECOND_ACCOUNT)

    assert response.status_code == 200 and response.json()["created"] is True
    assert sorted(Mailbox.objects.filter(client=alice).values_list("email", flat=True)) == [
        SECOND_ACCOUNT,
        TEST_ACCOUNT,
    ]
    first.refresh_from_db()
    assert credentials_for(first) == first_tokens
    for mailbox in Mailbox.objects.filter(client=alice):
        with gmail_client_for(mailbox) as gmail:
            assert gmail.get_profile().email_address == mailbox.email


def test_a_mailbox_connected_to_alice_is_refused_to_charlie_and_alice_keeps_it(
    alice, alice_api, charlie, charlie_api, connect_through_google
):
    assert connect_through_google(alice_api, alice).status_code == 200
    mailbox = Mailbox.objects.get()
    before = Mailbox.objects.values().get()

    response = connect_through_google(charlie_api, charlie)

    assert response.status_code == 409
    assert response.json()["code"] == "mailbox_owned_by_another_client"
    assert "already connected to another OreeStats account" in response.json()["detail"]
    assert "Alice" not in response.json()["detail"]
    assert Mailbox.objects.values().get() == before
    assert not Mailbox.objects.filter(client=charlie).exists()
    with gmail_client_for(mailbox) as gmail:  # Alice's grant was not revoked along the way
        assert gmail.get_profile().email_address == TEST_ACCOUNT


def test_reconnecting_a_disconnected_mailbox_resumes_its_held_emails(
    alice, alice_api, connect_through_google, google_sandbox
):
    assert connect_through_google(alice_api, alice).status_code == 200
    mailbox = Mailbox.objects.get(client=alice)
    old_tokens = credentials_for(mailbox)
    held = EmailSendQueueFactory.create_batch(2, client=alice, mailbox=mailbox)
    sent = EmailSendQueueFactory(client=alice, mailbox=mailbox, status=EmailSendQueue.Status.SENT)
    paused_campaign = CampaignFactory(client=alice, status="paused")
    paused = EmailSendQueueFactory(
        client=alice,
        mailbox=mailbox,
        campaign=paused_campaign,
        lead=LeadFactory(client=alice),
        status=EmailSendQueue.Status.PAUSED,
        status_reason="campaign_paused",
    )
    assert (
        disconnect_mailbox(mailbox=mailbox, reason="Google revoked this mailbox's authorisation (invalid_grant)") == 2
    )
    google_sandbox.revoke_grants(TEST_ACCOUNT)

    response = connect_through_google(alice_api, alice)

    assert response.status_code == 200
    assert (response.json()["created"], response.json()["resumed_emails"]) == (False, 2)
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.status_reason, mailbox.last_error) == ("active", "", "")
    assert mailbox.disconnected_at is None
    assert credentials_for(mailbox).refresh_token != old_tokens.refresh_token
    statuses = dict(EmailSendQueue.objects.values_list("pk", "status"))
    assert [statuses[row.pk] for row in held] == ["queued", "queued"]
    assert statuses[sent.pk] == "sent" and statuses[paused.pk] == "paused"
    with gmail_client_for(mailbox) as gmail:
        assert gmail.get_profile().email_address == TEST_ACCOUNT


def test_reconnecting_keeps_an_operators_pause(alice, alice_api, connect_through_google):
    assert connect_through_google(alice_api, alice).status_code == 200
    Mailbox.objects.update(status="paused", status_reason="paused by an operator")

    response = connect_through_google(alice_api, alice)

    assert response.status_code == 200 and response.json()["mailbox"]["status"] == "paused"


@pytest.mark.django_db(transaction=True)
def test_two_callbacks_racing_with_one_state_connect_at_most_once(alice, alice_api, initiate):
    import threading

    from django.db import connection
    from django.test import Client as BrowserClient

    query = consent(initiate(alice_api, alice))
    barrier = threading.Barrier(3)
    answers: list[tuple[int, str]] = []

    def callback() -> None:
        try:
            barrier.wait(timeout=5)
            response = BrowserClient().get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json")
            answers.append((response.status_code, response.json().get("code", "")))
        finally:
            connection.close()

    threads = [threading.Thread(target=callback) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(answers) == [(200, ""), (400, "state_used"), (400, "state_used")]
    assert Mailbox.objects.filter(client=alice).count() == 1
