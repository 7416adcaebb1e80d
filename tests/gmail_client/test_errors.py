"""Each scripted Gmail fault arrives as the right typed error, and a send is never repeated."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from email_service.gmail.client import (
    DailyLimitExceeded,
    GmailClient,
    GmailError,
    GmailUnavailable,
    GoogleConfig,
    InsufficientPermissions,
    InvalidMessage,
    MailboxCredentials,
    NotFound,
    OutcomeUnknown,
    RateLimited,
)
from google_sandbox import (
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_ACCEPT_THEN_RESET,
    FAULT_BACKEND_ERROR,
    FAULT_DAILY_LIMIT,
    FAULT_LATENCY,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_GET,
    OP_PROFILE,
    OP_SEND,
    OP_TOKEN_REFRESH,
    GoogleSandbox,
)
from google_sandbox.testing import GMAIL_READONLY, TEST_ACCOUNT, make_message

from .conftest import credentials_for


def test_rate_limit_carries_the_retry_time(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_RATE_LIMIT)
    with pytest.raises(RateLimited) as caught:
        client.send_raw(make_message())
    assert caught.value.retry_at == dt.datetime(2026, 11, 27, 20, 0, tzinfo=dt.UTC)
    assert caught.value.status == 429
    assert caught.value.google_reason == "rateLimitExceeded"
    google_sandbox.add_fault(OP_PROFILE, FAULT_RATE_LIMIT, retry_at="2027-03-04T05:06:07.890Z")
    with pytest.raises(RateLimited) as caught:
        client.get_profile()
    assert caught.value.retry_at == dt.datetime(2027, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []


def test_daily_limit(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_DAILY_LIMIT)
    with pytest.raises(DailyLimitExceeded) as caught:
        client.send_raw(make_message())
    assert caught.value.status == 403


def test_backend_error_on_send_is_outcome_unknown(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_BACKEND_ERROR)
    with pytest.raises(OutcomeUnknown) as caught:
        client.send_raw(make_message())
    assert caught.value.may_have_reached_google is True
    assert caught.value.status == 500


def test_backend_error_on_a_read_is_unavailable(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_PROFILE, FAULT_BACKEND_ERROR)
    with pytest.raises(GmailUnavailable) as caught:
        client.get_profile()
    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.status == 500


def test_503_on_send_did_not_send(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_UNAVAILABLE)
    with pytest.raises(GmailUnavailable) as caught:
        client.send_raw(make_message())
    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.may_have_reached_google is False
    assert caught.value.status == 503
    assert client.send_raw(make_message()).gmail_id  # and the client still works


@pytest.mark.parametrize("kind", [FAULT_ACCEPT_THEN_CLOSE, FAULT_ACCEPT_THEN_RESET])
def test_lost_answer_to_send_is_outcome_unknown_and_sent_exactly_once(
    client: GmailClient, google_sandbox: GoogleSandbox, kind: str
) -> None:
    client.get_profile()  # warm a keep-alive connection first: the send must not reuse it blindly
    google_sandbox.add_fault(OP_SEND, kind)
    with pytest.raises(OutcomeUnknown) as caught:
        client.send_raw(make_message(headers={"X-Oree-Queue-Id": "q-1"}))
    assert caught.value.may_have_reached_google is True
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1
    assert google_sandbox.faults_applied(kind=kind) == 1
    # Reconcile, as the sending code will: the message is findable.
    found = client.find_sent_by_header("lead@prospect.test", "X-Oree-Queue-Id", "q-1")
    assert found is not None
    assert found.gmail_id == google_sandbox.sent_messages(TEST_ACCOUNT)[0].gmail_id


def plain_service(sandbox: GoogleSandbox) -> Any:
    tokens = sandbox.issue_tokens(TEST_ACCOUNT, ["https://www.googleapis.com/auth/gmail.send"])
    return build(
        "gmail",
        "v1",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": sandbox.gmail_endpoint},
        http=google_auth_httplib2.AuthorizedHttp(Credentials(tokens["access_token"]), http=httplib2.Http(timeout=2)),
    )


@pytest.mark.parametrize("retries", [1, 2])
def test_plain_httplib2_resends_after_a_clean_close_even_with_retries_1(
    google_sandbox: GoogleSandbox, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    """The library behaviour _SingleAttemptHttp exists for: if this ever sends once, revisit it.

    A close without an answer surfaces as RemoteDisconnected (a BadStatusLine), which
    httplib2 always retries once as a "stale keep-alive connection", POST or not.
    """
    monkeypatch.setattr(httplib2, "RETRIES", retries)
    google_sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_CLOSE)
    raw = base64.urlsafe_b64encode(make_message()).decode()
    with plain_service(google_sandbox) as service:
        result = service.users().messages().send(userId="me", body={"raw": raw}).execute()
    assert result["id"]  # the silent second attempt succeeded...
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 2  # ...and the lead got two emails


def test_plain_httplib2_lets_a_raw_socket_error_out_after_a_reset(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_RESET)
    raw = base64.urlsafe_b64encode(make_message()).decode()
    with plain_service(google_sandbox) as service, pytest.raises(ConnectionResetError):
        service.users().messages().send(userId="me", body={"raw": raw}).execute()
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1


def test_latency_beyond_timeout_on_send_is_outcome_unknown(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    quick = dataclasses.replace(config, timeout=0.5)
    google_sandbox.add_fault(OP_SEND, FAULT_LATENCY, latency=1.0)
    with GmailClient(quick, mailbox_credentials) as gmail, pytest.raises(OutcomeUnknown):
        gmail.send_raw(make_message())
    deadline = time.monotonic() + 3
    while not google_sandbox.sent_messages(TEST_ACCOUNT) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1  # Google did send it, late
    assert google_sandbox.faults_applied(kind=FAULT_LATENCY) == 1  # one attempt only


def test_latency_beyond_timeout_on_a_read_is_unavailable(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    google_sandbox.add_fault(OP_PROFILE, FAULT_LATENCY, latency=1.0)
    with GmailClient(dataclasses.replace(config, timeout=0.5), mailbox_credentials) as gmail:
        with pytest.raises(GmailUnavailable) as caught:
            gmail.get_profile()
        assert not isinstance(caught.value, OutcomeUnknown)
        assert caught.value.may_have_reached_google is True


def test_lost_answer_from_token_endpoint_is_not_outcome_unknown(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_ACCEPT_THEN_CLOSE)
    stale = dataclasses.replace(mailbox_credentials, expiry=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    with GmailClient(config, stale) as gmail:
        with pytest.raises(GmailUnavailable) as caught:
            gmail.send_raw(make_message())
        assert not isinstance(caught.value, OutcomeUnknown)
        assert caught.value.may_have_reached_google is False
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []


def test_unreachable_gmail_did_not_send(
    config: GoogleConfig, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    google_sandbox.stop()
    with GmailClient(config, mailbox_credentials) as gmail:
        with pytest.raises(GmailUnavailable) as caught:
            gmail.send_raw(make_message())
        assert not isinstance(caught.value, OutcomeUnknown)
        assert caught.value.may_have_reached_google is False
        with pytest.raises(GmailUnavailable) as caught:
            gmail.get_profile()
        assert caught.value.may_have_reached_google is False


def test_bad_message_is_invalid_message(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    with pytest.raises(InvalidMessage) as caught:
        client.send_raw(b"Subject: to nobody\r\n\r\nhi\r\n")
    assert caught.value.reason == "Recipient address required"
    assert caught.value.status == 400


def test_unknown_thread_and_message_are_not_found(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    with pytest.raises(NotFound):
        client.send_raw(make_message(), thread_id="ffffffffffffffff")
    with pytest.raises(NotFound):
        client.get_message("0000000000000000")
    with pytest.raises(NotFound):
        client.get_thread("0000000000000000")
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []


def test_missing_scope_is_insufficient_permissions(config: GoogleConfig, google_sandbox: GoogleSandbox) -> None:
    with GmailClient(config, credentials_for(google_sandbox, scopes=(GMAIL_READONLY,))) as gmail:
        with pytest.raises(InsufficientPermissions):
            gmail.send_raw(make_message())
        assert gmail.get_profile().email_address == TEST_ACCOUNT


def test_errors_never_carry_tokens(
    client: GmailClient, google_sandbox: GoogleSandbox, mailbox_credentials: MailboxCredentials
) -> None:
    secrets = [mailbox_credentials.access_token, mailbox_credentials.refresh_token]
    faults = [FAULT_RATE_LIMIT, FAULT_DAILY_LIMIT, FAULT_BACKEND_ERROR, FAULT_UNAVAILABLE, FAULT_ACCEPT_THEN_RESET]
    errors: list[GmailError] = []
    for kind in faults:
        google_sandbox.add_fault(OP_SEND, kind)
        with pytest.raises(GmailError) as caught:
            client.send_raw(make_message())
        errors.append(caught.value)
    google_sandbox.add_fault(OP_GET, FAULT_BACKEND_ERROR)
    with pytest.raises(GmailError) as caught:
        client.get_message("0000000000000000")
    errors.append(caught.value)
    for error in errors:
        text = f"{error} {error!r} {error.__cause__!r} {error.__cause__}"
        for secret in secrets:
            assert secret is not None and secret not in text
