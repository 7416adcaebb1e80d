"""The control surface, in-process and over ``/_sandbox/`` through SandboxControl: same results."""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from google_sandbox import (
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_PROFILE,
    OP_SEND,
    ControlError,
    GoogleSandbox,
    MailboxMessage,
    SandboxControl,
    SandboxControlError,
    serve,
)
from google_sandbox.testing import GMAIL_READONLY, TEST_ACCOUNT, Api, api_for, make_message

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["in-process", "http"])
def control(request: pytest.FixtureRequest, google_sandbox: GoogleSandbox) -> GoogleSandbox | SandboxControl:
    if request.param == "in-process":
        return google_sandbox
    return SandboxControl(google_sandbox.base_url)


@pytest.fixture
def api(google_sandbox: GoogleSandbox) -> Api:
    return api_for(google_sandbox)


def refused() -> tuple[type[Exception], ...]:
    return (ControlError, SandboxControlError)


def test_accounts_and_tokens(control: GoogleSandbox | SandboxControl, google_sandbox: GoogleSandbox) -> None:
    control.add_account("New.Person@Example.com", "New Person")
    assert {"email": "new.person@example.com", "display_name": "New Person"} in control.accounts()
    tokens = control.issue_tokens("new.person@example.com", [GMAIL_READONLY])
    assert set(tokens) == {"access_token", "refresh_token", "expires_in", "scope", "token_type"}
    assert Api(google_sandbox, tokens["access_token"]).get("/profile").json()["emailAddress"] == (
        "new.person@example.com"
    )
    with pytest.raises(refused()):
        control.issue_tokens("ghost@example.com", [GMAIL_READONLY])
    with pytest.raises(refused()):
        control.add_account("not-an-email")


def test_default_account_and_clients(control: GoogleSandbox | SandboxControl) -> None:
    with pytest.raises(refused()):
        control.set_default_account("ghost@example.com")
    control.set_default_account(None)
    control.register_client("second-client", "second-secret", ["http://localhost/cb"])
    with pytest.raises(refused()):
        control.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY])  # two clients now: say which
    assert control.issue_tokens(TEST_ACCOUNT, [GMAIL_READONLY], client_id="second-client")["access_token"]


def test_sent_messages_are_parsed(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    raw = make_message(
        to="Lead <lead@prospect.test>",
        subject="=?utf-8?q?Caf=C3=A9?=",
        body="plain body",
        html="<b>html body</b>",
        headers={"X-Oree-Queue-Id": "0b7c"},
    )
    gid = api.send(raw).json()["id"]
    [stored] = control.sent_messages(TEST_ACCOUNT)
    assert isinstance(stored, MailboxMessage)
    assert stored.gmail_id == gid
    assert stored.thread_id == gid
    assert stored.label_ids == ["SENT"]
    assert stored.headers["Subject"] == "Café"
    assert stored.header("x-oree-queue-id") == "0b7c"
    assert ("To", "Lead <lead@prospect.test>") in stored.header_list
    assert stored.text_body is not None and stored.text_body.strip() == "plain body"
    assert stored.html_body is not None and stored.html_body.strip() == "<b>html body</b>"
    assert stored.raw.startswith(b"Date: ")  # Gmail adds a missing Date; the rest is ours, byte for byte
    assert stored.raw.endswith(raw)
    assert abs(stored.received_at - time.time()) < 10
    assert control.messages(TEST_ACCOUNT) == [stored]


def test_send_times(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    for n in range(3):
        api.send(make_message(message_id=f"<t{n}@x>"))
        time.sleep(0.05)
    times = control.send_times(TEST_ACCOUNT)
    assert len(times) == 3
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(times))


def test_deliver_and_threads(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    sent = api.send(make_message(message_id="<out@oree.test>")).json()
    reply = control.deliver(
        TEST_ACCOUNT,
        make_message(to=TEST_ACCOUNT, message_id="<re@p.test>", headers={"In-Reply-To": "<out@oree.test>"}),
    )
    assert reply.thread_id == sent["threadId"]
    bounce = control.deliver(TEST_ACCOUNT, make_message(message_id="<b@p.test>"), label_ids=["INBOX"])
    assert bounce.label_ids == ["INBOX"]
    with pytest.raises(refused()):
        control.deliver(TEST_ACCOUNT, make_message(), thread_id="ffffffffffffffff")
    assert len(control.messages(TEST_ACCOUNT)) == 3
    assert len(control.sent_messages(TEST_ACCOUNT)) == 1


def test_expire_history_and_replace_ids(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    start = api.get("/profile").json()["historyId"]
    api.send(make_message())
    control.expire_history(TEST_ACCOUNT)
    assert api.get("/history", startHistoryId=start).status_code == 404
    control.set_replace_message_ids(TEST_ACCOUNT, True)
    api.send(make_message(message_id="<mine@x>"))
    assert control.sent_messages(TEST_ACCOUNT)[-1].message_id != "<mine@x>"


def test_faults_and_log(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    control.add_fault(OP_SEND, FAULT_RATE_LIMIT, count=2, mailbox=TEST_ACCOUNT, retry_at="2027-01-01T00:00:00.000Z")
    control.add_fault(OP_PROFILE, FAULT_UNAVAILABLE)
    response = api.send(make_message())
    assert response.json()["error"]["message"].endswith("Retry after 2027-01-01T00:00:00.000Z")
    api.send(make_message())
    assert api.get("/profile").status_code == 503
    log = control.fault_log()
    assert [(f.op, f.kind, f.mailbox) for f in log] == [
        (OP_SEND, FAULT_RATE_LIMIT, TEST_ACCOUNT),
        (OP_SEND, FAULT_RATE_LIMIT, TEST_ACCOUNT),
        (OP_PROFILE, FAULT_UNAVAILABLE, TEST_ACCOUNT),
    ]
    assert control.faults_applied(kind=FAULT_RATE_LIMIT) == 2
    control.set_random_faults(1.0, [FAULT_UNAVAILABLE], op=OP_SEND, seed=1)
    assert api.send(make_message()).status_code == 503
    control.clear_faults()
    assert api.send(make_message()).status_code == 200
    with pytest.raises(refused()):
        control.add_fault("nope", FAULT_UNAVAILABLE)


def test_revoke_grants_and_reset(control: GoogleSandbox | SandboxControl, api: Api) -> None:
    assert control.revoke_grants(TEST_ACCOUNT) == 1
    assert api.get("/profile").status_code == 401
    control.add_account("temp@example.com")
    control.add_fault(OP_SEND, FAULT_UNAVAILABLE)
    control.reset()
    emails = [a["email"] for a in control.accounts()]
    assert emails == [TEST_ACCOUNT]  # back to the accounts the sandbox was built with
    assert control.messages(TEST_ACCOUNT) == []
    assert control.fault_log() == []
    fresh = api_for_control(control)
    assert fresh.send(make_message()).status_code == 200


def api_for_control(control: GoogleSandbox | SandboxControl) -> Api:
    token = control.issue_tokens(TEST_ACCOUNT, ["https://www.googleapis.com/auth/gmail.send"])["access_token"]
    return Api(control.base_url, token)


def test_unknown_control_endpoint(google_sandbox: GoogleSandbox) -> None:
    with pytest.raises(SandboxControlError) as caught:
        SandboxControl(google_sandbox.base_url)._call("GET", "/nothing-here")
    assert caught.value.status == 404
    assert SandboxControl(google_sandbox.base_url).health()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "google_sandbox",
            "--port",
            "0",
            "--client-id",
            "cli-client",
            "--client-secret",
            "cli-secret",
            "--account",
            "demo@example.com=Demo User",
            "--default-account",
            "demo@example.com",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Google sandbox listening on http://127.0.0.1:"), (first, process.poll())
        base_url = first.rsplit(" ", 1)[1].strip()
        settings = dict(process.stdout.readline().strip().split("=", 1) for _ in range(4))
        assert settings == {
            "GOOGLE_AUTH_URI": base_url + "/o/oauth2/auth",
            "GOOGLE_TOKEN_URI": base_url + "/token",
            "GOOGLE_REVOKE_URI": base_url + "/revoke",
            "GMAIL_API_ENDPOINT": base_url + "/",
        }
        control = SandboxControl(base_url)
        assert control.accounts() == [{"email": "demo@example.com", "display_name": "Demo User"}]
        assert control.issue_tokens("demo@example.com", [GMAIL_READONLY])["access_token"]
    finally:
        process.send_signal(signal.SIGTERM)
        _out, errors = process.communicate(timeout=10)
    assert process.returncode == 0, errors


def test_serve_in_a_thread_stops_on_its_event() -> None:
    started: list[GoogleSandbox] = []
    stop = threading.Event()
    out = io.StringIO()
    worker = threading.Thread(
        target=serve,
        kwargs={"port": 0, "accounts": ["t@example.com"], "out": out, "ready": started.append, "stop_event": stop},
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    [sandbox] = started
    assert SandboxControl(sandbox.base_url).accounts() == [{"email": "t@example.com", "display_name": ""}]
    assert f"GMAIL_API_ENDPOINT={sandbox.gmail_endpoint}" in out.getvalue()
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    with pytest.raises(OSError):
        SandboxControl(sandbox.base_url, timeout=1).health()
