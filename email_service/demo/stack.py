"""The demo a newcomer sees from README command 1: a client to log in as, and its extras."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import CommandError

from email_service.dashboard.sessions import create_client
from email_service.demo.history import seed_demo_history
from email_service.mailboxes.oauth import complete_mailbox_connection, start_mailbox_connection
from email_service.models import Client, Mailbox

DEMO_EMAIL = "demo@oreestats.local"
DEMO_PASSWORD = "demo-password-4821"
DEMO_NAME = "Demo Company"


def ensure_demo_client() -> Client:
    """The demo client, created on first run (idempotent)."""
    existing = Client.objects.filter(email=DEMO_EMAIL).first()
    if existing is not None:
        return existing
    client = create_client(name=DEMO_NAME, email=DEMO_EMAIL, password=DEMO_PASSWORD, timezone_name="UTC")
    # A month of recorded history, so the dashboard opens on figures and a chart, not zeros
    # (about 5 s on SQLite, first run only; the history names no mailbox, so nothing is sent).
    seed_demo_history(client=client)
    return client


DEMO_MAILBOXES = (("sales@demo-company.test", "Dana Sales"), ("outreach@demo-company.test", "Omar Outreach"))
DEMO_OAUTH_CLIENT_ID = "oree-demo.apps.googleusercontent.com"
SANDBOX_START_TIMEOUT = 30.0
GOOGLE_VARIABLES = ("GOOGLE_AUTH_URI", "GOOGLE_TOKEN_URI", "GOOGLE_REVOKE_URI", "GMAIL_API_ENDPOINT")


def start_demo_extras(
    *, client: Client, stdout: Any, public_base_url: str | None = None
) -> list[subprocess.Popen[bytes]]:
    """Processes the demo needs besides web, worker and beat; stopped with them.

    Starts the Google sandbox on a free local port, points this process and the children
    runstack starts next at it (through `os.environ`), and connects the demo mailboxes to the
    demo client through the real OAuth flow. Skipped when a real Google OAuth client is configured.
    """
    if os.environ.get("GOOGLE_CLIENT_ID"):
        stdout.write("GOOGLE_CLIENT_ID is set: using that Google OAuth client, no sandbox started.")
        return []
    base_url = (public_base_url or settings.PUBLIC_BASE_URL).rstrip("/")
    values = {
        "GOOGLE_CLIENT_ID": DEMO_OAUTH_CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": "GOCSPX-demo-" + secrets.token_urlsafe(18),
        "GOOGLE_REDIRECT_URI": os.environ.get("GOOGLE_REDIRECT_URI") or f"{base_url}/api/oauth/callback",
    }
    process, endpoints = start_google_sandbox(
        client_id=values["GOOGLE_CLIENT_ID"],
        client_secret=values["GOOGLE_CLIENT_SECRET"],
        redirect_uri=values["GOOGLE_REDIRECT_URI"],
    )
    values.update(endpoints)
    try:
        # Children (web, worker, beat) are started with a copy of os.environ; this process reads settings.
        os.environ.update(values)
        for name, value in values.items():
            setattr(settings, name, value)
        for email, _name in DEMO_MAILBOXES:
            mailbox = connect_sandbox_mailbox(client=client, email=email)
            stdout.write(f"Demo mailbox connected through the sandbox's OAuth consent: {mailbox.email}")
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise
    stdout.write(
        f"Google sandbox: {endpoints['GMAIL_API_ENDPOINT']} (control API {endpoints['GMAIL_API_ENDPOINT']}_sandbox/); "
        "nothing sent through it leaves this machine."
    )
    return [process]


def start_google_sandbox(
    *, client_id: str, client_secret: str, redirect_uri: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`python -m google_sandbox` on a free port, with the demo accounts; returns it and its GOOGLE_* values.

    The sandbox is a development tool outside the product: it runs as its own process, never imported.
    """
    log_path = settings.VAR_DIR / "google-sandbox.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "google_sandbox", "--port", "0",
        "--client-id", client_id, "--client-secret", client_secret, "--redirect-uri", redirect_uri,
        *[arg for email, name in DEMO_MAILBOXES for arg in ("--account", f"{email}={name}")],
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        # Our own fixed argv, no shell.
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + SANDBOX_START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "control API:" in text:
            found = dict(
                re.findall(
                    r"^(GOOGLE_AUTH_URI|GOOGLE_TOKEN_URI|GOOGLE_REVOKE_URI|GMAIL_API_ENDPOINT)=(\S+)$", text, re.M
                )
            )
            if set(found) == set(GOOGLE_VARIABLES):
                return process, found
        if process.poll() is not None:
            break
        time.sleep(0.1)
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)
    raise CommandError(f"the Google sandbox did not start; see {log_path}")


def connect_sandbox_mailbox(*, client: Client, email: str) -> Mailbox:
    """Connect `email` to `client` as a user would: initiate, follow Google's consent, then our callback."""
    url = start_mailbox_connection(client=client, initiated_by="demo", login_hint=email)
    consent = requests.get(url, allow_redirects=False, timeout=10)
    if consent.status_code != 302:
        raise CommandError(f"the sandbox's consent page answered {consent.status_code}")
    query = urllib.parse.urlsplit(consent.headers["Location"]).query
    params = {key: values[0] for key, values in urllib.parse.parse_qs(query).items()}
    return complete_mailbox_connection(params=params).mailbox
