"""A running sandbox, a GoogleConfig pointing at it, and a connected mailbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from email_service.gmail.client import GmailClient, GoogleConfig, MailboxCredentials
from google_sandbox import GoogleSandbox
from google_sandbox.testing import (
    TEST_ACCOUNT,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REDIRECT_URI,
    TEST_SCOPES,
)


@pytest.fixture
def config(google_sandbox: GoogleSandbox) -> GoogleConfig:
    return GoogleConfig(
        client_id=TEST_CLIENT_ID,
        client_secret=TEST_CLIENT_SECRET,
        redirect_uri=TEST_REDIRECT_URI,
        auth_uri=google_sandbox.auth_uri,
        token_uri=google_sandbox.token_uri,
        revoke_uri=google_sandbox.revoke_uri,
        gmail_endpoint=google_sandbox.gmail_endpoint,
        timeout=2.0,
    )


def credentials_for(
    sandbox: GoogleSandbox, email: str = TEST_ACCOUNT, scopes: tuple[str, ...] = TEST_SCOPES
) -> MailboxCredentials:
    tokens = sandbox.issue_tokens(email, scopes)
    return MailboxCredentials(
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=tokens["expires_in"]),
        scopes=tuple(tokens["scope"].split()),
    )


@pytest.fixture
def mailbox_credentials(google_sandbox: GoogleSandbox) -> MailboxCredentials:
    return credentials_for(google_sandbox)


@pytest.fixture
def refreshed() -> list[MailboxCredentials]:
    """What on_refresh received, in order."""
    return []


@pytest.fixture
def client(
    config: GoogleConfig, mailbox_credentials: MailboxCredentials, refreshed: list[MailboxCredentials]
) -> Iterator[GmailClient]:
    with GmailClient(config, mailbox_credentials, on_refresh=refreshed.append) as gmail:
        yield gmail
