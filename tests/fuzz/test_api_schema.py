"""Schemathesis drives every operation of /api/schema/ in-process, as n8n and as a client.

No answer may be a 5xx, every status must be one the schema declares, and every body must match
the schema of that status. Path ids are sometimes Alice's real ones, so the fuzzing reaches the
code past the 404s. The number of examples is bounded (FUZZ_EXAMPLES) to keep CI short.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from email_service.dashboard.sessions import issue_access_token
from email_service.events.recording import record_event
from email_service.models import EmailClickTracking, EmailTrackingPixel
from tests.factories import CampaignFactory, ClientFactory, EmailSendQueueFactory, LeadFactory, MailboxFactory

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load_schema():
    """The schema as the app serves it, read in-process; the app is then called in-process too."""
    from OreeStats.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture(autouse=True)
def keep_the_test_connection_open():
    """As Django's test client does: a request must not close the connection holding the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = _load_schema()


@pytest.fixture
def fuzz_world(db, settings):
    # Google is unreachable: every call to it must end in a declared 4xx, never a 5xx.
    closed = "http://127.0.0.1:9"
    settings.GOOGLE_CLIENT_ID = "fuzz-client-id"
    settings.GOOGLE_CLIENT_SECRET = "fuzz-client-secret"
    settings.GOOGLE_TOKEN_URI = f"{closed}/token"
    settings.GOOGLE_REVOKE_URI = f"{closed}/revoke"
    settings.GOOGLE_AUTH_URI = f"{closed}/auth"
    settings.GMAIL_API_ENDPOINT = f"{closed}/"
    alice = ClientFactory(name="Alice Corp", email="alice@alice.test")
    campaign = CampaignFactory(client=alice, name="Alice campaign")
    mailbox = MailboxFactory(client=alice, email="alice-sdr@alice.test")
    lead = LeadFactory(client=alice, email="lead@prospect.test")
    sent = EmailSendQueueFactory(
        client=alice, campaign=campaign, lead=lead, mailbox=mailbox, status="sent", sent_at=datetime.now(UTC)
    )
    record_event(message=sent, event_type="sent", occurred_at=sent.sent_at)
    record_event(message=sent, event_type="reply", detail={"subject": "Re: hi", "snippet": "Sounds good"})
    pixel = EmailTrackingPixel.objects.create(message=sent)
    link = EmailClickTracking.objects.create(message=sent, url="https://alice.test/pricing")
    return {
        "alice": alice,
        "ids": {
            "campaign_id": str(campaign.pk),
            "mailbox_id": str(mailbox.pk),
            "lead_id": str(lead.pk),
            "client_id": str(alice.pk),
            "pixel_id": pixel.token,
            "click_id": link.token,
            "token": sent.unsubscribe_token,
        },
    }


def _use_real_ids(case, ids: dict[str, str | None]) -> None:
    """Replace about half the generated path ids with Alice's, deterministically per example."""
    for name, value in list((case.path_parameters or {}).items()):
        real = ids.get(name)
        if real and str(value) and int(uuid.uuid5(uuid.NAMESPACE_URL, str(value)).hex[0], 16) % 2 == 0:
            case.path_parameters[name] = real


def _headers_for(case, alice) -> dict[str, str]:
    path = case.operation.path
    if path.startswith("/api/client/"):
        # A fresh token per example: logout and change-password revoke the one they were called with.
        return {"Authorization": f"Bearer {issue_access_token(client=alice).token}"}
    if path.startswith(("/api/email/", "/api/track/reply")):
        return {"Authorization": f"Bearer {django_settings.OREE_API_KEY}"}
    if path.startswith("/api/oauth/initiate/"):
        if int(uuid.uuid5(uuid.NAMESPACE_URL, str(case.path_parameters)).hex[0], 16) % 2:
            return {"Authorization": f"Bearer {issue_access_token(client=alice).token}"}
        return {"Authorization": f"Bearer {django_settings.OREE_API_KEY}"}
    return {}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_schema_says_and_never_with_a_5xx(case, fuzz_world):
    _use_real_ids(case, fuzz_world["ids"])
    case.headers = {**(case.headers or {}), **_headers_for(case, fuzz_world["alice"])}
    response = case.call()
    documented = {str(status) for status in case.operation.definition.raw["responses"]}
    if "503" in documented:
        # /api/health answers 503 by contract when a dependency is down; nothing else may.
        assert response.status_code in (503,) or response.status_code < 500, response.text
        case.validate_response(response, checks=CHECKS[1:])
    else:
        case.validate_response(response, checks=CHECKS)
