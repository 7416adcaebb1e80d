"""Ready-made sandbox set-up and bare HTTP helpers for tests (no pytest or Django imports).

A conftest turns it into a fixture::

    @pytest.fixture
    def google_sandbox():
        with make_test_sandbox() as sandbox:
            yield sandbox
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any

import requests

from .server import GoogleSandbox
from .state import OAuthClient

TEST_CLIENT_ID = "oree-test.apps.googleusercontent.com"
TEST_CLIENT_SECRET = "GOCSPX-sandbox-test-secret"
TEST_REDIRECT_URI = "http://127.0.0.1:8000/api/oauth/callback"
TEST_ACCOUNT = "sender@example.com"
TEST_ACCOUNT_NAME = "Sam Sender"
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
TEST_SCOPES = (GMAIL_SEND, GMAIL_READONLY)


def make_test_sandbox(**overrides: object) -> GoogleSandbox:
    """A (not yet started) sandbox with one OAuth client and one consenting account."""
    kwargs: dict[str, object] = {
        "clients": [OAuthClient(TEST_CLIENT_ID, TEST_CLIENT_SECRET, (TEST_REDIRECT_URI,))],
        "accounts": [(TEST_ACCOUNT, TEST_ACCOUNT_NAME)],
        "default_account": TEST_ACCOUNT,
    }
    kwargs.update(overrides)
    return GoogleSandbox(**kwargs)  # type: ignore[arg-type]


def make_message(
    to: str = "lead@prospect.test",
    subject: str = "Hello",
    body: str = "Hi there, quick question.",
    *,
    sender: str = TEST_ACCOUNT,
    message_id: str | None = "<q-1@oree.test>",
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if message_id is not None:
        msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


class Api:
    """Bare Gmail REST calls with a bearer token (requests, no Google library).

    Each call uses its own connection, so nothing is left open when a test ends.
    """

    def __init__(self, sandbox: GoogleSandbox | str, token: str) -> None:
        base_url = sandbox if isinstance(sandbox, str) else sandbox.base_url
        self.root = base_url.rstrip("/")
        self.base = self.root + "/gmail/v1/users/me"
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """``url`` is absolute, or a path under ``/gmail/v1/users/me``."""
        full = url if url.startswith("http") else self.base + url
        return requests.request(method, full, headers=self.headers, timeout=5, **kwargs)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.request("POST", path, json=body)

    def send(self, raw: bytes, thread_id: str | None = None) -> requests.Response:
        body: dict[str, str] = {"raw": base64.urlsafe_b64encode(raw).decode()}
        if thread_id:
            body["threadId"] = thread_id
        return self.post("/messages/send", body)


def api_for(sandbox: GoogleSandbox, email: str = TEST_ACCOUNT, scopes: tuple[str, ...] = TEST_SCOPES) -> Api:
    return Api(sandbox, sandbox.issue_tokens(email, scopes)["access_token"])
