"""The OAuth round trip through google-auth-oauthlib, against the sandbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import urllib.parse

import pytest
import requests
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError  # type: ignore[import-untyped, unused-ignore]

from email_service.gmail.client import (
    GMAIL_SCOPES,
    SCOPE_SEND,
    AuthorizationFailed,
    AuthorizationRevoked,
    GmailClient,
    GoogleConfig,
    MailboxCredentials,
    ScopesNotGranted,
    code_from_callback,
    exchange_code,
    revoke_token,
    start_authorization,
)
from google_sandbox import GoogleSandbox
from google_sandbox.testing import TEST_ACCOUNT, TEST_CLIENT_ID, TEST_REDIRECT_URI

OAUTHLIB_VARS = ("OAUTHLIB_INSECURE_TRANSPORT", "OAUTHLIB_RELAX_TOKEN_SCOPE")


@pytest.fixture(autouse=True)
def clean_oauthlib_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OAUTHLIB_VARS:
        monkeypatch.delenv(name, raising=False)


def consent(url: str) -> dict[str, str]:
    """Play the browser: follow the consent URL once, stop at the redirect to our callback."""
    response = requests.get(url, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(TEST_REDIRECT_URI + "?")
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).items()}


def test_full_round_trip(config: GoogleConfig, google_sandbox: GoogleSandbox) -> None:
    url, verifier = start_authorization(config, state="state-123", login_hint=TEST_ACCOUNT)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert url.startswith(google_sandbox.auth_uri + "?")
    assert query["client_id"] == [TEST_CLIENT_ID]
    assert query["redirect_uri"] == [TEST_REDIRECT_URI]
    assert query["response_type"] == ["code"]
    assert query["scope"] == [" ".join(GMAIL_SCOPES)]
    assert query["state"] == ["state-123"]
    assert query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"]
    assert query["include_granted_scopes"] == ["true"]
    assert query["login_hint"] == [TEST_ACCOUNT]
    assert query["code_challenge_method"] == ["S256"]
    assert verifier not in url and 43 <= len(verifier) <= 128

    code = code_from_callback(consent(url), expected_state="state-123")
    # A different request later: a fresh Flow, given only the code and the stored verifier.
    credentials, granted = exchange_code(config, code, verifier, state="state-123")
    assert granted == GMAIL_SCOPES
    assert credentials.scopes == GMAIL_SCOPES
    assert credentials.access_token and credentials.refresh_token
    assert credentials.expiry is not None and credentials.expiry.tzinfo is not None
    remaining = credentials.expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < remaining <= dt.timedelta(hours=1, seconds=1)  # oauthlib rounds
    with GmailClient(config, credentials) as gmail:
        assert gmail.get_profile().email_address == TEST_ACCOUNT
    assert all(name not in os.environ for name in OAUTHLIB_VARS)  # switched on only for the calls


def test_wrong_verifier_is_refused(config: GoogleConfig) -> None:
    url, _verifier = start_authorization(config, state="s")
    code = code_from_callback(consent(url), "s")
    _other_url, other_verifier = start_authorization(config, state="s")
    with pytest.raises(AuthorizationFailed) as caught:
        exchange_code(config, code, other_verifier)
    assert caught.value.error == "invalid_grant"


def test_replayed_code_is_refused_and_revokes_the_first_exchange(config: GoogleConfig) -> None:
    url, verifier = start_authorization(config, state="s")
    code = code_from_callback(consent(url), "s")
    credentials, _ = exchange_code(config, code, verifier)
    with pytest.raises(AuthorizationFailed) as caught:
        exchange_code(config, code, verifier)
    assert caught.value.error == "invalid_grant"
    expired = dataclasses.replace(credentials, expiry=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    with GmailClient(config, expired) as gmail, pytest.raises(AuthorizationRevoked):
        gmail.get_profile()


def test_denied_consent(config: GoogleConfig, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_consent(deny=True)
    url, _ = start_authorization(config, state="s")
    params = consent(url)
    assert "code" not in params
    with pytest.raises(AuthorizationFailed) as caught:
        code_from_callback(params, "s")
    assert caught.value.error == "access_denied"


def test_state_must_match(config: GoogleConfig) -> None:
    url, _ = start_authorization(config, state="mine")
    with pytest.raises(AuthorizationFailed) as caught:
        code_from_callback(consent(url), "someone-elses")
    assert caught.value.error == "state_mismatch"


def test_fewer_scopes_granted_is_refused_and_the_grant_revoked(
    config: GoogleConfig, google_sandbox: GoogleSandbox
) -> None:
    google_sandbox.set_consent(grant_only=[SCOPE_SEND])
    url, verifier = start_authorization(config, state="s")
    params = consent(url)
    assert params["scope"] == SCOPE_SEND
    with pytest.raises(ScopesNotGranted) as caught:
        exchange_code(config, params["code"], verifier)
    assert caught.value.missing == ("https://www.googleapis.com/auth/gmail.readonly",)
    assert caught.value.granted == (SCOPE_SEND,)
    assert google_sandbox.revoke_grants(TEST_ACCOUNT) == 0  # already revoked by exchange_code


def test_fewer_scopes_are_fine_when_not_required(config: GoogleConfig, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_consent(grant_only=[SCOPE_SEND])
    url, verifier = start_authorization(config, state="s")
    credentials, granted = exchange_code(config, consent(url)["code"], verifier, required_scopes=[SCOPE_SEND])
    assert granted == (SCOPE_SEND,)
    assert credentials.scopes == (SCOPE_SEND,)


def test_oauthlib_alone_refuses_plain_http(google_sandbox: GoogleSandbox) -> None:
    """Why we set OAUTHLIB_INSECURE_TRANSPORT ourselves (loopback only)."""
    flow = Flow.from_client_config(
        {"web": {"client_id": "x", "client_secret": "y", "auth_uri": google_sandbox.auth_uri, "token_uri": "t"}},
        scopes=list(GMAIL_SCOPES),
        redirect_uri=TEST_REDIRECT_URI,
    )
    with pytest.raises(InsecureTransportError):
        flow.authorization_url()


def test_plain_http_on_a_non_loopback_host_is_refused(config: GoogleConfig) -> None:
    remote = dataclasses.replace(config, auth_uri="http://accounts.example.test/o/oauth2/auth")
    with pytest.raises(ValueError, match="https"):
        start_authorization(remote, state="s")
    remote = dataclasses.replace(config, token_uri="http://oauth2.example.test/token")
    with pytest.raises(ValueError, match="https"):
        exchange_code(remote, "code", "verifier")
    assert all(name not in os.environ for name in OAUTHLIB_VARS)


def test_revoke_token(config: GoogleConfig, google_sandbox: GoogleSandbox) -> None:
    url, verifier = start_authorization(config, state="s")
    credentials, _ = exchange_code(config, code_from_callback(consent(url), "s"), verifier)
    assert credentials.refresh_token is not None
    assert revoke_token(config, credentials.refresh_token) is True
    assert revoke_token(config, credentials.refresh_token) is False  # already gone
    gone = MailboxCredentials(None, credentials.refresh_token, None, credentials.scopes)
    with GmailClient(config, gone) as gmail, pytest.raises(AuthorizationRevoked):
        gmail.get_profile()
