"""The demo client's month of history: recorded like real traffic, consistent, and never sendable."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from email_service.demo.stack import ensure_demo_client
from email_service.models import EmailEvent, EmailSendQueue


@pytest.mark.slow
def test_the_demo_client_starts_with_a_month_of_history_the_rollups_agree_with(db, charlie):
    demo = ensure_demo_client()

    emails = EmailSendQueue.objects.filter(client=demo)
    assert emails.count() > 500
    assert set(emails.values_list("status", flat=True)) == {"sent"}
    assert not emails.filter(mailbox__isnull=False).exists()  # nothing the dispatcher could pick up
    kinds = set(EmailEvent.objects.filter(client=demo).values_list("event_type", "is_machine"))
    assert {("sent", False), ("open", False), ("open", True), ("click", False), ("reply", False)} <= kinds
    assert {("bounce", False), ("click", True)} <= kinds
    assert not EmailEvent.objects.filter(client=charlie).exists()

    output = StringIO()
    call_command("verify_rollups", stdout=output)
    assert "0 drifted" in output.getvalue()

    # bin/run again: the same client, the history recorded once.
    count = emails.count()
    assert ensure_demo_client() == demo
    assert EmailSendQueue.objects.filter(client=demo).count() == count
