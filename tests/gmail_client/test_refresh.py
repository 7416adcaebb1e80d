"""Access-token refresh, reported through on_refresh; revoked grants."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import pytest

from email_service.gmail.client import AuthorizationRevoked, GmailClient, GoogleConfig, MailboxCredentials
from google_sandbox import (
    FAULT_AUTH_ERROR,
    FAULT_INVALID_GRANT,
    OP_PROFILE,
    OP_TOKEN_REFRESH,
    GoogleSandbox,
)
from google_sandbox.testing import TEST_ACCOUNT, Api, make_message

from .conftest import credentials_for


def expired(credentials: MailboxCredentials) -> MailboxCredentials:
    return dataclasses.replace(credentials, expiry=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))


def test_expired_token_is_refreshed_and_reported(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    seen: list[MailboxCredentials] = []
    with GmailClient(config, expired(mailbox_credentials), on_refresh=seen.append) as gmail:
        assert gmail.get_profile().email_address == TEST_ACCOUNT
        assert gmail.get_profile().email_address == TEST_ACCOUNT  # no second refresh
        [new] = seen
        assert new.access_token and new.access_token != mailbox_credentials.access_token
        assert new.refresh_token == mailbox_credentials.refresh_token
        assert new.scopes == mailbox_credentials.scopes
        assert new.expiry is not None and new.expiry.tzinfo is not None
        assert new.expiry > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)
        assert gmail.credentials == new
    assert Api(google_sandbox, new.access_token).get("/profile").status_code == 200


def test_token_expired_on_the_server_is_refreshed_after_a_401(
    config: GoogleConfig, google_sandbox: GoogleSandbox
) -> None:
    google_sandbox.set_access_token_lifetime(0.2)
    credentials = dataclasses.replace(credentials_for(google_sandbox), expiry=None)  # we don't know it expired
    seen: list[MailboxCredentials] = []
    time.sleep(0.3)
    google_sandbox.set_access_token_lifetime(3600)  # refreshed tokens live long: one refresh only
    with GmailClient(config, credentials, on_refresh=seen.append) as gmail:
        gmail.send_raw(make_message())
    assert len(seen) == 1
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1


def test_one_401_is_absorbed_by_a_refresh(
    client: GmailClient, google_sandbox: GoogleSandbox, refreshed: list[MailboxCredentials]
) -> None:
    google_sandbox.add_fault(OP_PROFILE, FAULT_AUTH_ERROR)
    assert client.get_profile().email_address == TEST_ACCOUNT
    assert len(refreshed) == 1


def test_401_that_persists_after_refresh_is_authorization_revoked(
    client: GmailClient, google_sandbox: GoogleSandbox, refreshed: list[MailboxCredentials]
) -> None:
    google_sandbox.add_fault(OP_PROFILE, FAULT_AUTH_ERROR, count=None)
    with pytest.raises(AuthorizationRevoked) as caught:
        client.get_profile()
    assert caught.value.status == 401
    assert google_sandbox.faults_applied(kind=FAULT_AUTH_ERROR) == 3  # first try + 2 refresh-and-retry
    assert len(refreshed) == 1  # the refreshed token is still reported (and still valid)


def test_invalid_grant_on_refresh_is_authorization_revoked(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_INVALID_GRANT, mailbox=TEST_ACCOUNT)
    seen: list[MailboxCredentials] = []
    with GmailClient(config, expired(mailbox_credentials), on_refresh=seen.append) as gmail:
        with pytest.raises(AuthorizationRevoked) as caught:
            gmail.send_raw(make_message())
        assert caught.value.google_reason == "invalid_grant"
    assert seen == []
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []


def test_user_revoking_access_is_authorization_revoked(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    client.get_profile()
    google_sandbox.revoke_grants(TEST_ACCOUNT)
    with pytest.raises(AuthorizationRevoked):
        client.get_profile()


def test_failing_on_refresh_callback_does_not_fail_the_operation(
    config: GoogleConfig,
    google_sandbox: GoogleSandbox,
    mailbox_credentials: MailboxCredentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: MailboxCredentials) -> None:
        raise RuntimeError("database is down")

    with caplog.at_level(logging.ERROR), GmailClient(config, expired(mailbox_credentials), broken) as gmail:
        sent = gmail.send_raw(make_message())
        new_token = gmail.credentials.access_token
    assert sent.gmail_id
    assert "on_refresh callback failed" in caplog.text
    assert new_token is not None and new_token not in caplog.text
    assert str(mailbox_credentials.refresh_token) not in caplog.text


def test_credentials_repr_hides_tokens(mailbox_credentials: MailboxCredentials, config: GoogleConfig) -> None:
    assert mailbox_credentials.access_token and mailbox_credentials.refresh_token
    assert mailbox_credentials.access_token not in repr(mailbox_credentials)
    assert mailbox_credentials.refresh_token not in repr(mailbox_credentials)
    assert config.client_secret not in repr(config)
    with pytest.raises(ValueError, match="aware"):
        MailboxCredentials("a", "r", dt.datetime(2030, 1, 1), ())
