"""Tenant isolation: every /api/client/ route, found in the URL configuration, run as Charlie on Alice's data.

Each answer must be a 404 or Charlie's own data; none may carry anything of Alice's, and none may
change anything of Alice's. A route added later joins the matrix by itself; a new path parameter
or a new writing method fails the matrix until it is given Alice's ids or a body below.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from email_service.events.recording import record_event
from email_service.models import Campaign, EmailSendQueue, Mailbox
from tests.conftest import dashboard_api
from tests.factories import DEFAULT_PASSWORD, CampaignFactory, EmailSendQueueFactory, LeadFactory, MailboxFactory

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")


def client_routes() -> list[tuple[str, str, URLPattern]]:
    """(route, method, pattern) for every /api/client/ route of the URL configuration."""

    def walk(patterns, prefix: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    routes: list[tuple[str, str, URLPattern]] = []
    for route, pattern in walk(get_resolver().url_patterns, ""):
        if not route.startswith("api/client/"):
            continue
        view_class = pattern.callback.view_class
        routes.extend((route, method, pattern) for method in METHODS if hasattr(view_class, method))
    return routes


ROUTES = client_routes()

# Which of Alice's objects each path parameter names.
ALICE_IDS = {"campaign_id": "campaign", "mailbox_id": "mailbox"}
# Bodies for routes that take one, sent as Charlie (with his own credentials where it matters).
BODIES = {
    ("api/client/login", "post"): {"email": "charlie@charlie.test", "password": DEFAULT_PASSWORD},
    ("api/client/change-password", "post"): {
        "current_password": DEFAULT_PASSWORD,
        "new_password": "Charlies-New-Secret-42",
    },
    ("api/client/settings", "put"): {"timezone": "Asia/Tokyo", "mailbox_daily_limit": 10},
    ("api/client/logout", "post"): {},
    ("api/client/campaigns/<uuid:campaign_id>/pause", "post"): {},
    ("api/client/campaigns/<uuid:campaign_id>/resume", "post"): {},
}


@pytest.fixture
def alices_world(alice, charlie):
    """Alice's data, full of markers that must never reach Charlie."""
    campaign = CampaignFactory(client=alice, name="Alice Secret Campaign")
    paused = CampaignFactory(client=alice, name="Alice Paused Campaign", status=Campaign.Status.PAUSED)
    mailbox = MailboxFactory(client=alice, email="alice-sdr@alice.test")
    lead = LeadFactory(client=alice, email="alice-lead@prospect.test")
    sent = EmailSendQueueFactory(
        client=alice,
        campaign=campaign,
        lead=lead,
        mailbox=mailbox,
        subject="Alice secret subject",
        status="sent",
        sent_at=datetime.now(UTC),
    )
    record_event(message=sent, event_type="sent", occurred_at=sent.sent_at)
    record_event(message=sent, event_type="open", occurred_at=sent.sent_at)
    record_event(message=sent, event_type="reply", detail={"subject": "Re: Alice secret", "snippet": "Alice snippet"})
    queued = EmailSendQueueFactory(client=alice, campaign=campaign, lead=lead, mailbox=mailbox, sequence_number=2)
    paused_email = EmailSendQueueFactory(
        client=alice, campaign=paused, mailbox=mailbox, status="paused", status_reason="campaign_paused"
    )
    # Charlie has a little of his own, so his answers are not empty by construction.
    own = EmailSendQueueFactory(client=charlie, subject="Charlie subject", status="sent", sent_at=datetime.now(UTC))
    record_event(message=own, event_type="sent", occurred_at=own.sent_at)
    alice_api = dashboard_api(alice)
    markers = [
        str(alice.pk),
        alice.email,
        alice.name,
        str(campaign.pk),
        str(paused.pk),
        campaign.name,
        str(mailbox.pk),
        mailbox.email,
        lead.email,
        str(lead.pk),
        "Alice secret",
        "Alice snippet",
    ]
    return {
        "alice": alice,
        "alice_api": alice_api,
        "campaign": campaign,
        "paused": paused,
        "mailbox": mailbox,
        "queued": queued,
        "paused_email": paused_email,
        "markers": markers,
    }


def alice_state(world) -> dict[str, object]:
    alice = world["alice"]
    alice.refresh_from_db()
    return {
        "client": (alice.password, alice.timezone, alice.mailbox_daily_limit, alice.is_active),
        "campaigns": sorted(Campaign.objects.filter(client=alice).values_list("name", "status")),
        "emails": sorted(EmailSendQueue.objects.filter(client=alice).values_list("subject", "status")),
        "mailboxes": list(Mailbox.objects.filter(client=alice).values_list("email", "status")),
        "sessions": alice.sessions.filter(revoked_at__isnull=True).count(),
    }


def url_for(route: str, world, ids: dict[str, str]) -> str:
    url = "/" + route
    for name, converter in (part.split(">")[0].split(":")[::-1] for part in route.split("<")[1:]):
        assert name in ids, f"{route}: say which of Alice's objects <{converter}:{name}> names in ALICE_IDS"
        url = url.replace(f"<{converter}:{name}>", str(world[ids[name]].pk))
    return url


def test_the_matrix_sees_every_dashboard_route():
    found = {(route, method) for route, method, _ in ROUTES}
    assert {
        ("api/client/login", "post"),
        ("api/client/logout", "post"),
        ("api/client/stats", "get"),
        ("api/client/campaigns", "get"),
        ("api/client/campaigns/<uuid:campaign_id>/pause", "post"),
        ("api/client/campaigns/<uuid:campaign_id>/resume", "post"),
        ("api/client/replies", "get"),
        ("api/client/timeline", "get"),
        ("api/client/mailboxes", "get"),
        ("api/client/mailboxes/<uuid:mailbox_id>", "delete"),
        ("api/client/change-password", "post"),
        ("api/client/settings", "get"),
        ("api/client/settings", "put"),
    } <= found


def test_alices_markers_are_visible_to_alice_so_the_matrix_can_fail(alices_world):
    api = alices_world["alice_api"]
    bodies = "".join(api.get(f"/api/client/{name}").content.decode() for name in ("campaigns", "replies", "mailboxes"))
    for marker in ("Alice Secret Campaign", "alice-lead@prospect.test", "alice-sdr@alice.test", "Alice snippet"):
        assert marker in bodies


@pytest.mark.parametrize(
    ("route", "method"), [(r, m) for r, m, _ in ROUTES], ids=[f"{m.upper()} /{r}" for r, m, _ in ROUTES]
)
def test_charlie_gets_a_404_or_his_own_data_and_alice_is_untouched(route, method, alices_world, charlie, charlie_api):
    before = alice_state(alices_world)
    url = url_for(route, alices_world, ALICE_IDS)
    if method in ("post", "put", "patch"):
        assert (route, method) in BODIES, f"give {method.upper()} /{route} a body in BODIES"
        response = getattr(charlie_api, method)(url, BODIES[(route, method)], format="json")
    else:
        response = getattr(charlie_api, method)(url)
    content = response.content.decode()
    if "<" in route:
        assert response.status_code == 404, content
        assert response.json()["code"].endswith("not_found")
    else:
        assert response.status_code in (200, 204), content
    for marker in alices_world["markers"]:
        assert marker not in content, f"{method.upper()} {url} leaked {marker!r}"
    assert alice_state(alices_world) == before
    assert alices_world["alice_api"].get("/api/client/stats").status_code == 200


def test_charlie_can_act_on_his_own_ids(charlie, charlie_api):
    campaign = CampaignFactory(client=charlie)
    mailbox = MailboxFactory(client=charlie)
    assert charlie_api.post(f"/api/client/campaigns/{campaign.pk}/pause").json()["status"] == "paused"
    assert charlie_api.post(f"/api/client/campaigns/{campaign.pk}/resume").json()["status"] == "active"
    assert charlie_api.delete(f"/api/client/mailboxes/{mailbox.pk}").json()["status"] == "disconnected"


def test_the_integration_key_cannot_read_a_dashboard(integration_api, alices_world):
    assert integration_api.get("/api/client/stats").status_code == 403
