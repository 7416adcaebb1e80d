"""README command 1 end to end: runstack brings up web, worker and beat on SQLite with no servers."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runstack_serves_a_healthy_system_without_postgres_or_redis(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "PUBLIC_BASE_URL"}
        and not key.startswith(("GOOGLE_", "GMAIL_"))
    }
    env.update({"DEBUG": "1", "OREE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "OreeStats.settings"})
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--bind", f"127.0.0.1:{port}", "--web-workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body: dict = {}
        # Generous: the first start migrates, seeds a month of demo history and starts the sandbox,
        # and CI's two cores may be busy.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
                body = response.json()
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert body.get("status") == "ok", body
        assert body["components"]["database"]["detail"] == "sqlite"
        assert body["components"]["broker"]["detail"] == "filesystem"
        assert (tmp_path / "oreestats.sqlite3").exists()
        api_key = env.get("OREE_API_KEY", "dev-api-key")
        client_id = assert_demo_mailboxes_connected_through_the_sandbox(tmp_path / "oreestats.sqlite3", port, api_key)
        assert_an_email_goes_out_tracked(port, api_key, client_id)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    assert "demo@oreestats.local" in output
    assert "Stopped." in output
    # Ctrl-C stopped every child: nothing is left listening on the port.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def assert_an_email_goes_out_tracked(port: int, api_key: str, client_id: str) -> None:
    """Queued through the API, the running worker and beat send it (SQLite, filesystem broker)."""
    web, lead_id = f"http://127.0.0.1:{port}", str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {api_key}"}
    queued = requests.post(
        f"{web}/api/email/send",
        json={
            "lead_id": lead_id,
            "client_id": client_id,
            "recipient_email": "newcomer@prospect.test",
            "email_subject": "Hello from the runstack test",
            "email_body": "<p>Hi, <a href='https://example.com/demo?x=1#top'>the demo</a>.</p>",
            "sequence_number": 1,
        },
        headers=auth,
        timeout=10,
    )
    assert queued.status_code == 202, queued.text
    row: dict[str, object] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        row = requests.get(f"{web}/api/email/status/{lead_id}", headers=auth, timeout=10).json()["emails"][0]
        if row["status"] not in ("queued", "sending"):
            break
        time.sleep(1)
    assert row["status"] == "sent", row
    assert row["gmail_message_id"] and row["gmail_thread_id"]


def assert_demo_mailboxes_connected_through_the_sandbox(database: Path, port: int, api_key: str) -> str:
    """The demo client has its sandbox mailboxes, and the running web itself talks to that sandbox."""
    with sqlite3.connect(database) as db:
        (client_id,) = db.execute("SELECT id FROM email_service_client WHERE email = 'demo@oreestats.local'").fetchone()
        mailboxes = db.execute(
            "SELECT email, status, refresh_token_encrypted FROM email_service_mailbox"
            " WHERE client_id = ? ORDER BY email",
            (client_id,),
        ).fetchall()
    assert [(email, status) for email, status, _ in mailboxes] == [
        ("outreach@demo-company.test", "active"),
        ("sales@demo-company.test", "active"),
    ]
    assert all(token.startswith("gAAAAA") for _, _, token in mailboxes)

    web = f"http://127.0.0.1:{port}"
    client_uuid = str(uuid.UUID(client_id))
    initiate = requests.get(
        f"{web}/api/oauth/initiate/{client_uuid}",
        params={"login_hint": "sales@demo-company.test"},
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        timeout=10,
    )
    assert initiate.status_code == 200, initiate.text
    consent_url = initiate.json()["authorization_url"]
    assert urllib.parse.urlsplit(consent_url).hostname == "127.0.0.1"  # the sandbox, not accounts.google.com
    consent = requests.get(consent_url, allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    callback = consent.headers["Location"]
    assert callback.startswith(f"{web}/api/oauth/callback?")
    connected = requests.get(callback, headers={"Accept": "application/json"}, timeout=10)
    assert connected.status_code == 200, connected.text
    assert connected.json()["mailbox"]["email"] == "sales@demo-company.test"
    assert connected.json()["created"] is False
    return client_uuid
