"""A full run with every logger at DEBUG: no secret or token value appears in what the log handlers write.

The run: create a client, sign in, connect a Gmail mailbox through OAuth against the Google
sandbox, queue emails with the API key, send them through the real send path, open and click
them, report a reply, change the password, sign out. Then the handlers' output is searched for
every secret in play. The redacting filter (email_service/log_redaction.py) is what passes this.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from email_service.dashboard.sessions import create_client
from email_service.mailboxes.credentials import credentials_for, decrypt_secret
from email_service.models import EmailClickTracking, EmailSendQueue, Mailbox, OAuthState
from email_service.sending import dispatch
from google_sandbox.testing import TEST_CLIENT_SECRET
from tests.oauth.conftest import consent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOUD_LOGGERS = [
    "",
    "django",
    "django.request",
    "django.server",
    "httplib2",
    "urllib3",
    "oauthlib",
    "requests_oauthlib",
    "googleapiclient",
    "googleapiclient.discovery",
    "google",
    "google.auth",
    "google_auth_oauthlib",
    "celery",
    "kombu",
    "redis",
    "email_service",
    "OreeStats",
]


@pytest.fixture
def captured_logs():
    """What the configured handlers write, with every logger (but SQL) at DEBUG."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.filters]
    assert handlers, "the project's console handler (with its filters) is not installed"
    buffer = io.StringIO()
    previous_streams = [h.setStream(buffer) for h in handlers]
    previous_levels = {name: logging.getLogger(name).level for name in LOUD_LOGGERS}
    previous_handler_levels = [h.level for h in handlers]
    for name in LOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for h in handlers:
        h.setLevel(logging.DEBUG)
    logging.getLogger("django.db.backends").setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        for h, stream, level in zip(handlers, previous_streams, previous_handler_levels, strict=True):
            h.setStream(stream)
            h.setLevel(level)
        for name, level in previous_levels.items():
            logging.getLogger(name).setLevel(level)


def test_a_full_run_at_debug_logs_no_secret_or_token(captured_logs, google_settings, google_sandbox, api):
    secrets_in_play: dict[str, str] = {
        "api key": settings.OREE_API_KEY,
        "jwt secret": settings.JWT_SECRET_KEY,
        "django secret": settings.SECRET_KEY,
        **{f"fernet key {n}": str(key) for n, key in enumerate(settings.TOKEN_ENCRYPTION_KEYS)},
        "google client secret": TEST_CLIENT_SECRET,
    }
    password, new_password = "Sturdy-Password-2048", "Even-Sturdier-Password-4096"
    secrets_in_play |= {"password": password, "new password": new_password}
    client = create_client(name="Alice Corp", email="alice@alice.test", password=password)
    logging.getLogger("email_service.proof").debug("the capture works: %s", "marker-0xC0FFEE")

    login = api.post("/api/client/login", {"email": "alice@alice.test", "password": password}, format="json")
    assert login.status_code == 200
    jwt = login.json()["access_token"]
    secrets_in_play["jwt"] = jwt
    auth = {"HTTP_AUTHORIZATION": f"Bearer {jwt}"}

    initiated = api.get(f"/api/oauth/initiate/{client.pk}", **auth)
    assert initiated.status_code == 302
    state_row = OAuthState.objects.get(client=client)
    secrets_in_play["code verifier"] = decrypt_secret(state_row.code_verifier_encrypted)
    query = consent(initiated["Location"])
    secrets_in_play["authorisation code"] = re.search(r"code=([^&]+)", query).group(1)
    callback = api.get(f"/api/oauth/callback?{query}", HTTP_ACCEPT="application/json")
    assert callback.status_code == 200, callback.content
    mailbox = Mailbox.objects.get(client=client)
    tokens = credentials_for(mailbox)
    secrets_in_play |= {"access token": tokens.access_token, "refresh token": tokens.refresh_token}

    key = {"HTTP_AUTHORIZATION": f"Bearer {settings.OREE_API_KEY}"}
    lead_id = uuid.uuid4()
    for step in (1, 2):
        queued = api.post(
            "/api/email/send",
            {
                "lead_id": str(lead_id),
                "client_id": str(client.pk),
                "recipient_email": "lead@prospect.test",
                "email_subject": "Hello",
                "email_body": '<p>Hi, see <a href="https://alice.test/pricing">pricing</a></p>',
                "sequence_number": step,
            },
            format="json",
            **key,
        )
        assert queued.status_code == 202, queued.content
        # A bad key and a key in the query string, as a prober would send them.
        api.post(f"/api/email/send?api_key={settings.OREE_API_KEY}", {}, format="json")
    # Force a refresh of the access token on the way: expire it first.
    Mailbox.objects.filter(pk=mailbox.pk).update(token_expires_at=timezone.now())
    for turn in range(6):  # a worker's turns, each a pacing interval later than the last
        result = dispatch.claim_next_email(
            mailbox_id=mailbox.pk, worker="w", now=timezone.now() + timedelta(seconds=5 * turn)
        )
        if result.claim:
            dispatch.send_claimed_email(claim=result.claim)
    assert EmailSendQueue.objects.filter(status="sent").count() == 2
    refreshed = credentials_for(Mailbox.objects.get(pk=mailbox.pk))
    secrets_in_play["refreshed access token"] = refreshed.access_token

    sent = EmailSendQueue.objects.filter(status="sent").first()
    assert api.get(f"/api/track/open/{sent.pixel.token}.png").status_code == 200
    link = EmailClickTracking.objects.filter(message=sent).first()
    assert api.get(f"/api/track/click/{link.token}").status_code == 302
    reply = api.post(
        "/api/track/reply",
        {"gmail_thread_id": sent.gmail_thread_id, "from_email": "lead@prospect.test", "snippet": "Sure"},
        format="json",
        **key,
    )
    assert reply.status_code in (200, 201)

    changed = api.post(
        "/api/client/change-password",
        {"current_password": password, "new_password": new_password},
        format="json",
        **auth,
    )
    assert changed.status_code == 200
    assert api.post("/api/client/logout", **auth).status_code == 204
    assert api.get("/api/client/stats", **auth).status_code == 401  # logs the revoked token's refusal
    api.get("/api/client/stats", HTTP_AUTHORIZATION="Bearer not-a-jwt")
    api.post("/api/client/login", {"email": "alice@alice.test", "password": "Wrong-password-1"}, format="json")
    try:  # an exception whose text carries a token must be scrubbed in the traceback too
        raise RuntimeError(f"refresh failed for Bearer {tokens.access_token}")
    except RuntimeError:
        logging.getLogger("email_service.proof").exception("simulated failure")

    logs = captured_logs.getvalue()
    assert "marker-0xC0FFEE" in logs and "simulated failure" in logs
    # The libraries that print credentials at DEBUG did log: the search means something.
    assert "requests_oauthlib" in logs and len(logs.splitlines()) > 30, logs
    leaked = {name: value for name, value in secrets_in_play.items() if value and value in logs}
    assert not leaked, f"secrets in the logs: {sorted(leaked)}"
