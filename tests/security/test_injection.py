"""Hostile text in every free-text field stays data: stored as sent, JSON-encoded by the API, escaped by the admin.

The dashboard's rendering of the same text is checked in a real browser in
tests/web/test_dashboard_in_a_browser.py; here are the API and the operators' admin.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from email_service.dashboard.sessions import create_client
from email_service.models import Campaign, Client, EmailEvent, EmailSendQueue, Lead
from tests.conftest import dashboard_api
from tests.factories import CampaignFactory, MailboxFactory

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
SQL = "');DROP TABLE email_service_lead;--"
PAYLOAD = f"{SCRIPT}{IMG}{SQL}"  # under 100 characters with its prefix: lead names are limited


@pytest.fixture
def hostile(integration_api):
    client = create_client(name=f"Evil {PAYLOAD}", email="evil@evil.test", password="Sturdy-Password-2048")
    campaign = CampaignFactory(client=client, name=f"Campaign {PAYLOAD}")
    MailboxFactory(client=client, email="sdr@evil.test")
    lead_id = uuid.uuid4()
    response = integration_api.post(
        "/api/email/send",
        {
            "lead_id": str(lead_id),
            "client_id": str(client.pk),
            "campaign_id": str(campaign.pk),
            "recipient_email": "lead@prospect.test",
            "email_subject": f"Subject {PAYLOAD}",
            "email_body": f"<p>Body {PAYLOAD}</p>",
            "sequence_number": 1,
            "lead_first_name": f"First {PAYLOAD}",
            "lead_last_name": f"Last {PAYLOAD}",
            "lead_company": f"Company {PAYLOAD}",
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    EmailSendQueue.objects.filter(pk=response.json()["queue_id"]).update(
        status="sent", gmail_thread_id="thread-evil", gmail_message_id="msg-evil"
    )
    reply = integration_api.post(
        "/api/track/reply",
        {
            "gmail_thread_id": "thread-evil",
            "from_email": "lead@prospect.test",
            "subject": f"Re: {PAYLOAD}",
            "snippet": f"Snippet {PAYLOAD}",
            "body": f"Reply body {PAYLOAD}",
        },
        format="json",
    )
    assert reply.status_code == 201, reply.content
    return {"client": client, "campaign": campaign, "lead_id": lead_id, "queue_id": response.json()["queue_id"]}


def test_every_hostile_field_is_stored_exactly_as_sent_and_no_statement_ran(hostile):
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('email_service_lead')")
        assert cursor.fetchone()[0] is not None
    lead = Lead.objects.get(pk=hostile["lead_id"])
    assert (lead.first_name, lead.last_name) == (f"First {PAYLOAD}", f"Last {PAYLOAD}")
    assert EmailSendQueue.objects.get(pk=hostile["queue_id"]).subject == f"Subject {PAYLOAD}"
    assert Client.objects.get(pk=hostile["client"].pk).name == f"Evil {PAYLOAD}"
    reply = EmailEvent.objects.get(event_type="reply")
    assert reply.detail["subject"] == f"Re: {PAYLOAD}"


def test_the_api_returns_hostile_text_as_json_strings_never_as_markup(hostile):
    api = dashboard_api(hostile["client"])
    for path, expected in [
        ("/api/client/replies", f"Snippet {PAYLOAD}"),
        ("/api/client/replies", f"Re: {PAYLOAD}"),
        ("/api/client/campaigns", f"Campaign {PAYLOAD}"),
    ]:
        response = api.get(path)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/json")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert expected in response.content.decode("unicode_escape") or expected in str(response.json())


ADMIN_PAGES = [
    ("client", Client),
    ("campaign", Campaign),
    ("lead", Lead),
    ("emailsendqueue", EmailSendQueue),
    ("emailevent", EmailEvent),
]


@pytest.mark.parametrize(("name", "model"), ADMIN_PAGES)
def test_the_admin_renders_hostile_text_escaped(hostile, client, name, model):
    client.force_login(User.objects.create_superuser("operator", "op@oreestats.test", "Operator-Pass-991"))
    changelist = client.get(reverse(f"admin:email_service_{name}_changelist") + "?all=")
    obj = model.objects.order_by("pk").last() if model is not EmailEvent else model.objects.get(event_type="reply")
    change = client.get(reverse(f"admin:email_service_{name}_change", args=[obj.pk]))
    for response in (changelist, change):
        assert response.status_code == 200
        html = response.content.decode()
        assert SCRIPT not in html and IMG not in html, f"{name}: raw markup in the admin"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in change.content.decode(), f"{name}: the payload is not shown at all"
