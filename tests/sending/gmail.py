"""The Google sandbox as the sending tests use it: connected mailboxes with real (sandbox) tokens."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from email_service.mailboxes.credentials import encrypt_secret
from email_service.sending import dispatch
from google_sandbox.testing import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_SCOPES, make_test_sandbox
from tests.factories import EmailSendQueueFactory, MailboxFactory

__all__ = ["connect_mailbox", "fresh", "make_test_sandbox", "point_settings_at", "queue", "sandbox_env", "turn"]


def point_settings_at(settings, sandbox) -> None:
    settings.GOOGLE_CLIENT_ID = TEST_CLIENT_ID
    settings.GOOGLE_CLIENT_SECRET = TEST_CLIENT_SECRET
    settings.GOOGLE_AUTH_URI = sandbox.auth_uri
    settings.GOOGLE_TOKEN_URI = sandbox.token_uri
    settings.GOOGLE_REVOKE_URI = sandbox.revoke_uri
    settings.GMAIL_API_ENDPOINT = sandbox.gmail_endpoint
    settings.GMAIL_HTTP_TIMEOUT = 5


def sandbox_env(sandbox) -> dict[str, str]:
    """The same, as environment variables for worker processes."""
    return {
        "GOOGLE_CLIENT_ID": TEST_CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": TEST_CLIENT_SECRET,
        "GOOGLE_AUTH_URI": sandbox.auth_uri,
        "GOOGLE_TOKEN_URI": sandbox.token_uri,
        "GOOGLE_REVOKE_URI": sandbox.revoke_uri,
        "GMAIL_API_ENDPOINT": sandbox.gmail_endpoint,
    }


def connect_mailbox(sandbox, *, client, email: str, display_name: str = "Sam Sender", expired: bool = False, **fields):
    """A mailbox of `client` whose tokens the sandbox issued, stored encrypted like the OAuth callback does."""
    sandbox.add_account(email, display_name)
    tokens = sandbox.issue_tokens(email, TEST_SCOPES)
    expires = timezone.now() + (timedelta(seconds=-60) if expired else timedelta(seconds=int(tokens["expires_in"])))
    return MailboxFactory(
        client=client,
        email=email,
        display_name=display_name,
        access_token_encrypted=encrypt_secret(tokens["access_token"]),
        refresh_token_encrypted=encrypt_secret(tokens["refresh_token"]),
        token_expires_at=expires,
        scopes=" ".join(TEST_SCOPES),
        **fields,
    )


def queue(mailbox, **fields):
    """A queued email of `mailbox`'s client, assigned to it."""
    return EmailSendQueueFactory(client=mailbox.client, mailbox=mailbox, **fields)


def turn(mailbox, now=None):
    """Claim the mailbox's next due row and send it, as a worker's turn does; the outcome's name."""
    result = dispatch.claim_next_email(mailbox_id=mailbox.pk, worker="test-worker", now=now or timezone.now())
    assert result.claim is not None, result.skipped
    return dispatch.send_claimed_email(claim=result.claim)


def fresh(row):
    row.refresh_from_db()
    return row
