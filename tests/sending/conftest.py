"""Helpers for the sending pipeline's tests: n8n's request payloads and Alice's mailboxes."""

from __future__ import annotations

import uuid

import pytest

from tests.factories import MailboxFactory
from tests.sending.gmail import connect_mailbox


def payload(client, **overrides):
    """A valid POST /api/email/send body for `client`; override any field."""
    body = {
        "lead_id": str(uuid.uuid4()),
        "client_id": str(client.pk),
        "recipient_email": f"lead-{uuid.uuid4().hex[:8]}@prospect.test",
        "email_subject": "Quick question",
        "email_body": "<p>Hi Pat, <a href='https://alice.test/demo'>see the demo</a>.</p>",
        "sequence_number": 1,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


@pytest.fixture
def alice_mailbox(alice):
    return MailboxFactory(client=alice, email="sam@alice.test", display_name="Sam from Alice")


@pytest.fixture
def mailbox(sandbox, alice):
    """Alice's mailbox, connected to the sandbox with real (sandbox) tokens."""
    return connect_mailbox(sandbox, client=alice, email="sam@alice.test", display_name="Sam from Alice")
