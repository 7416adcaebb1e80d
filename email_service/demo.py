"""The demo a newcomer sees from README command 1: a client to log in as, and its extras."""

from __future__ import annotations

import subprocess
from typing import Any

from email_service.models import Client
from email_service.services.auth import create_client
from email_service.services.demo_history import seed_demo_history

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


def start_demo_extras(*, client: Client, stdout: Any) -> list[subprocess.Popen[bytes]]:
    """Processes the demo needs besides web, worker and beat; stopped with them.

    The Google sandbox and the demo mailbox connected through it join here.
    """
    return []
