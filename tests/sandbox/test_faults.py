"""Scripted faults, seen from the wire."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest
import requests

from google_sandbox import (
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_ACCEPT_THEN_RESET,
    FAULT_AUTH_ERROR,
    FAULT_BACKEND_ERROR,
    FAULT_DAILY_LIMIT,
    FAULT_INVALID_GRANT,
    FAULT_LATENCY,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_ANY,
    OP_GET,
    OP_LIST,
    OP_PROFILE,
    OP_SEND,
    OP_TOKEN_REFRESH,
    ControlError,
    GoogleSandbox,
)
from google_sandbox.testing import (
    GMAIL_READONLY,
    GMAIL_SEND,
    TEST_ACCOUNT,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    Api,
    api_for,
    make_message,
)


@pytest.fixture
def api(google_sandbox: GoogleSandbox) -> Api:
    return api_for(google_sandbox)


def test_rate_limit_has_googles_exact_shape(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_RATE_LIMIT, retry_at="2026-12-01T08:30:00.000Z")
    response = api.send(make_message())
    assert response.status_code == 429
    message = "User-rate limit exceeded.  Retry after 2026-12-01T08:30:00.000Z"
    assert response.json() == {
        "error": {
            "code": 429,
            "message": message,
            "errors": [{"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}],
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []
    assert api.send(make_message()).status_code == 200  # count was 1


@pytest.mark.parametrize(
    ("kind", "status", "reason", "domain"),
    [
        (FAULT_DAILY_LIMIT, 403, "dailyLimitExceeded", "usageLimits"),
        (FAULT_AUTH_ERROR, 401, "authError", "global"),
        (FAULT_BACKEND_ERROR, 500, "backendError", "global"),
        (FAULT_UNAVAILABLE, 503, "backendError", "global"),
    ],
)
def test_error_faults(
    google_sandbox: GoogleSandbox, api: Api, kind: str, status: int, reason: str, domain: str
) -> None:
    google_sandbox.add_fault(OP_SEND, kind, count=2)
    for _ in range(2):
        response = api.send(make_message())
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == status
        assert error["errors"][0]["reason"] == reason
        assert error["errors"][0]["domain"] == domain
    assert api.send(make_message()).status_code == 200
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1
    assert google_sandbox.faults_applied(kind=kind) == 2


def test_faults_are_per_operation_and_mailbox(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_account("other@example.com")
    other = api_for(google_sandbox, "other@example.com")
    google_sandbox.add_fault(OP_PROFILE, FAULT_UNAVAILABLE, mailbox="other@example.com")
    assert api.get("/profile").status_code == 200
    assert api.send(make_message()).status_code == 200
    assert other.get("/profile").status_code == 503
    assert other.get("/profile").status_code == 200
    [applied] = google_sandbox.fault_log()
    assert (applied.op, applied.kind, applied.mailbox) == (OP_PROFILE, FAULT_UNAVAILABLE, "other@example.com")


def test_any_operation_and_unlimited_count(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_fault(OP_ANY, FAULT_BACKEND_ERROR, count=None)
    assert api.get("/profile").status_code == 500
    assert api.get("/messages").status_code == 500
    assert api.send(make_message()).status_code == 500
    google_sandbox.clear_faults()
    assert api.get("/profile").status_code == 200
    assert google_sandbox.faults_applied(op=OP_LIST) == 1
    assert google_sandbox.faults_applied() == 3


def test_latency_delays_then_answers(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_fault(OP_SEND, FAULT_LATENCY, latency=0.4)
    google_sandbox.add_fault(OP_SEND, FAULT_RATE_LIMIT)
    started = time.monotonic()
    response = api.send(make_message())
    assert time.monotonic() - started >= 0.4
    assert response.status_code == 429  # latency stacks with an error fault
    assert api.send(make_message()).status_code == 200
    assert google_sandbox.faults_applied(kind=FAULT_LATENCY) == 1  # used up: no delay the second time


def raw_send(sandbox: GoogleSandbox, token: str) -> http.client.HTTPConnection:
    body = json.dumps({"raw": "VG86IGFAYi50ZXN0DQpTdWJqZWN0OiB4DQoNCmhpDQo="}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    conn.request(
        "POST",
        "/gmail/v1/users/me/messages/send",
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return conn


def test_accept_then_reset_stores_the_message_and_resets(google_sandbox: GoogleSandbox) -> None:
    token = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_SEND])["access_token"]
    google_sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_RESET)
    conn = raw_send(google_sandbox, token)
    with pytest.raises(ConnectionResetError) as caught:
        conn.getresponse()
    conn.close()
    # A reset, not a clean close: RemoteDisconnected subclasses ConnectionResetError, rule it out.
    assert not isinstance(caught.value, http.client.RemoteDisconnected)
    [stored] = google_sandbox.sent_messages(TEST_ACCOUNT)
    assert stored.headers["To"] == "a@b.test"


def test_accept_then_close_stores_the_message_and_closes_cleanly(google_sandbox: GoogleSandbox) -> None:
    token = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_SEND])["access_token"]
    google_sandbox.add_fault(OP_SEND, FAULT_ACCEPT_THEN_CLOSE)
    conn = raw_send(google_sandbox, token)
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    conn.close()
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1


def test_keep_alive_connection_is_reused(google_sandbox: GoogleSandbox) -> None:
    token = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY])["access_token"]
    conn = http.client.HTTPConnection("127.0.0.1", google_sandbox.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/gmail/v1/users/me/profile", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        sock = conn.sock
        assert sock is not None
    assert conn.sock is sock  # same socket all along
    conn.close()


def refresh(sandbox: GoogleSandbox, refresh_token: str) -> requests.Response:
    return requests.post(
        sandbox.token_uri,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
        timeout=5,
    )


def test_token_refresh_faults(google_sandbox: GoogleSandbox) -> None:
    tokens = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY])
    google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_INVALID_GRANT)
    google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_UNAVAILABLE, mailbox="someone-else@example.com")
    denied = refresh(google_sandbox, tokens["refresh_token"])
    assert denied.status_code == 400
    assert denied.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    assert refresh(google_sandbox, tokens["refresh_token"]).status_code == 200  # grant itself still valid
    assert google_sandbox.faults_applied(op=OP_TOKEN_REFRESH, mailbox=TEST_ACCOUNT) == 1


def test_invalid_grant_only_hits_the_token_endpoint(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_fault(OP_ANY, FAULT_INVALID_GRANT)
    assert api.get("/profile").status_code == 200
    with pytest.raises(ControlError):
        google_sandbox.add_fault(OP_SEND, FAULT_INVALID_GRANT)
    with pytest.raises(ControlError):
        google_sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_DAILY_LIMIT)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("teleport", FAULT_UNAVAILABLE), {}),
        ((OP_SEND, "meteor"), {}),
        ((OP_SEND, FAULT_UNAVAILABLE), {"count": 0}),
        ((OP_SEND, FAULT_LATENCY), {}),
    ],
)
def test_bad_fault_specs_are_refused(
    google_sandbox: GoogleSandbox, args: tuple[str, str], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ControlError):
        google_sandbox.add_fault(*args, **kwargs)


def test_random_faults_hit_about_the_given_share(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.set_random_faults(0.25, [FAULT_RATE_LIMIT, FAULT_UNAVAILABLE], op=OP_SEND, seed=7)
    statuses = [api.send(make_message(message_id=f"<r{n}@x>")).status_code for n in range(80)]
    failed = [s for s in statuses if s != 200]
    assert set(failed) == {429, 503}
    assert 8 <= len(failed) <= 32
    assert google_sandbox.faults_applied() == len(failed)
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 80 - len(failed)
    assert api.get(f"/messages/{google_sandbox.sent_messages(TEST_ACCOUNT)[0].gmail_id}").status_code == 200
    google_sandbox.set_random_faults(0.0, [FAULT_RATE_LIMIT])
    assert all(api.send(make_message()).status_code == 200 for _ in range(10))


def test_fault_on_get_leaves_send_alone(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_fault(OP_GET, FAULT_BACKEND_ERROR)
    gid = api.send(make_message()).json()["id"]
    assert api.get(f"/messages/{gid}").status_code == 500
    assert api.get(f"/messages/{gid}").status_code == 200


def test_stop_drops_idle_keep_alive_connections() -> None:
    sandbox = GoogleSandbox(clients=[("c", "s")], accounts=["a@example.com"]).start()
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    conn.request("GET", "/_sandbox/health")
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    assert response.getheader("Connection") != "close"  # kept alive, idle on the server
    sandbox.stop()
    sock = conn.sock
    assert sock is not None
    sock.settimeout(2)
    assert sock.recv(1024) == b""  # the server side is gone, not left hanging
    conn.close()
