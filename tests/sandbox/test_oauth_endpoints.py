"""The sandbox's OAuth endpoints, spoken to with plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse

import pytest
import requests

from google_sandbox import GoogleSandbox
from google_sandbox.testing import (
    GMAIL_READONLY,
    GMAIL_SEND,
    TEST_ACCOUNT,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REDIRECT_URI,
)

VERIFIER = "v" * 64
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).decode().rstrip("=")


def authorize(sandbox: GoogleSandbox, **params: str) -> requests.Response:
    query = {
        "client_id": TEST_CLIENT_ID,
        "redirect_uri": TEST_REDIRECT_URI,
        "response_type": "code",
        "scope": f"{GMAIL_SEND} {GMAIL_READONLY}",
        "state": "st-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
    }
    query.update(params)
    return requests.get(sandbox.auth_uri, params=query, allow_redirects=False, timeout=5)


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(TEST_REDIRECT_URI + "?")
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).items()}


def exchange(sandbox: GoogleSandbox, code: str, *, basic: bool = True, **extra: str) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": TEST_REDIRECT_URI}
    form["code_verifier"] = VERIFIER
    form.update(extra)
    auth = (TEST_CLIENT_ID, TEST_CLIENT_SECRET) if basic else None
    if not basic:
        form.update(client_id=TEST_CLIENT_ID, client_secret=TEST_CLIENT_SECRET)
    return requests.post(sandbox.token_uri, data=form, auth=auth, timeout=5)


def test_consent_redirects_with_code_state_and_granted_scopes(google_sandbox: GoogleSandbox) -> None:
    params = redirect_params(authorize(google_sandbox))
    assert params["state"] == "st-1"
    assert params["scope"].split() == [GMAIL_SEND, GMAIL_READONLY]
    assert params["code"]


@pytest.mark.parametrize("basic", [True, False], ids=["http-basic", "form-body"])
def test_code_exchange_accepts_client_credentials_either_way(google_sandbox: GoogleSandbox, basic: bool) -> None:
    code = redirect_params(authorize(google_sandbox))["code"]
    response = exchange(google_sandbox, code, basic=basic)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == f"{GMAIL_SEND} {GMAIL_READONLY}"
    assert token["access_token"].startswith("ya29.")
    assert token["refresh_token"]
    assert "id_token" not in token


def test_wrong_client_secret_is_invalid_client(google_sandbox: GoogleSandbox) -> None:
    code = redirect_params(authorize(google_sandbox))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": TEST_REDIRECT_URI}
    response = requests.post(google_sandbox.token_uri, data=form, auth=(TEST_CLIENT_ID, "nope"), timeout=5)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "Unauthorized"}


def test_code_is_single_use_and_replay_revokes_what_it_bought(google_sandbox: GoogleSandbox) -> None:
    code = redirect_params(authorize(google_sandbox))["code"]
    first = exchange(google_sandbox, code).json()
    replay = exchange(google_sandbox, code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    refresh = requests.post(
        google_sandbox.token_uri,
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
        timeout=5,
    )
    assert refresh.status_code == 400
    assert refresh.json()["error"] == "invalid_grant"


def test_pkce_verifier_is_checked(google_sandbox: GoogleSandbox) -> None:
    code = redirect_params(authorize(google_sandbox))["code"]
    wrong = exchange(google_sandbox, code, code_verifier="w" * 64)
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant", "error_description": "Invalid code verifier."}
    code = redirect_params(authorize(google_sandbox))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": TEST_REDIRECT_URI}
    missing = requests.post(google_sandbox.token_uri, data=form, auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET), timeout=5)
    assert missing.json()["error_description"] == "Missing code verifier."


def test_redirect_uri_must_equal_the_authorised_one(google_sandbox: GoogleSandbox) -> None:
    code = redirect_params(authorize(google_sandbox))["code"]
    response = exchange(google_sandbox, code, redirect_uri=TEST_REDIRECT_URI + "/other")
    assert response.status_code == 400
    assert response.json()["error"] == "redirect_uri_mismatch"


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(google_sandbox: GoogleSandbox) -> None:
    response = authorize(google_sandbox, redirect_uri="http://evil.test/cb")
    assert response.status_code == 400
    assert "redirect_uri_mismatch" in response.text
    assert "Location" not in response.headers


def test_unknown_client_gets_an_error_page(google_sandbox: GoogleSandbox) -> None:
    response = authorize(google_sandbox, client_id="who")
    assert response.status_code == 401
    assert "invalid_client" in response.text


def test_denied_consent_redirects_with_access_denied_and_state(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_consent(deny=True)
    assert redirect_params(authorize(google_sandbox)) == {"error": "access_denied", "state": "st-1"}


def test_consent_can_grant_fewer_scopes(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_consent(grant_only=[GMAIL_SEND])
    params = redirect_params(authorize(google_sandbox))
    assert params["scope"] == GMAIL_SEND
    assert exchange(google_sandbox, params["code"]).json()["scope"] == GMAIL_SEND


def test_login_hint_picks_a_known_account(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_account("other@example.com", "Olga")
    code = redirect_params(authorize(google_sandbox, login_hint="Other@Example.com"))["code"]
    token = exchange(google_sandbox, code).json()["access_token"]
    profile = requests.get(
        google_sandbox.gmail_endpoint + "gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    assert profile["emailAddress"] == "other@example.com"


def test_without_default_account_a_chooser_page_links_each_account(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_default_account(None)
    google_sandbox.add_account("other@example.com", "Olga <&>")
    page = authorize(google_sandbox)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Olga &lt;&amp;&gt;" in page.text
    assert "login_hint=other%40example.com" in page.text
    # Following a link consents as that account.
    assert redirect_params(authorize(google_sandbox, login_hint="other@example.com"))["code"]


def test_refresh_token_only_on_first_offline_consent_or_prompt_consent(google_sandbox: GoogleSandbox) -> None:
    first = exchange(google_sandbox, redirect_params(authorize(google_sandbox))["code"]).json()
    assert "refresh_token" in first
    again = exchange(google_sandbox, redirect_params(authorize(google_sandbox, prompt=""))["code"]).json()
    assert "refresh_token" not in again  # Google's behaviour: why we always send prompt=consent
    forced = exchange(google_sandbox, redirect_params(authorize(google_sandbox, prompt="consent"))["code"]).json()
    assert "refresh_token" in forced


def test_include_granted_scopes_adds_earlier_grants(google_sandbox: GoogleSandbox) -> None:
    exchange(google_sandbox, redirect_params(authorize(google_sandbox, scope=GMAIL_READONLY))["code"])
    params = redirect_params(authorize(google_sandbox, scope=GMAIL_SEND, include_granted_scopes="true"))
    assert set(params["scope"].split()) == {GMAIL_SEND, GMAIL_READONLY}


def refresh(sandbox: GoogleSandbox, refresh_token: str, **extra: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return requests.post(sandbox.token_uri, data=form, auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET), timeout=5)


def test_refresh_grant_issues_new_access_tokens_and_checks_scope(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_access_token_lifetime(5)
    tokens = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_SEND, GMAIL_READONLY])
    answer = refresh(google_sandbox, tokens["refresh_token"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["access_token"] != tokens["access_token"]
    assert body["expires_in"] == 5
    assert "refresh_token" not in body
    narrower = refresh(google_sandbox, tokens["refresh_token"], scope=GMAIL_SEND).json()
    assert narrower["scope"] == GMAIL_SEND
    wider = refresh(google_sandbox, tokens["refresh_token"], scope="https://mail.google.com/")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    assert refresh(google_sandbox, "1//bogus").json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revoke_kills_the_whole_grant(google_sandbox: GoogleSandbox, which: str) -> None:
    tokens = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY])
    response = requests.post(google_sandbox.revoke_uri, data={"token": tokens[which]}, timeout=5)
    assert response.status_code == 200
    assert refresh(google_sandbox, tokens["refresh_token"]).status_code == 400
    profile = requests.get(
        google_sandbox.gmail_endpoint + "gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=5,
    )
    assert profile.status_code == 401
    again = requests.post(google_sandbox.revoke_uri, params={"token": tokens[which]}, timeout=5)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_token"


def test_access_tokens_expire(google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_access_token_lifetime(1.0)
    token = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY])["access_token"]
    url = google_sandbox.gmail_endpoint + "gmail/v1/users/me/profile"
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    time.sleep(1.1)
    expired = requests.get(url, headers=headers, timeout=5)
    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    assert expired.json()["error"]["errors"][0]["reason"] == "authError"
