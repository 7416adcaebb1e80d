"""Shared fixtures: API clients for each audience, and the personas Alice, Bob and Charlie."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from email_service.dashboard.sessions import issue_access_token
from tests.factories import ClientFactory


@pytest.fixture
def api() -> APIClient:
    """No credentials."""
    return APIClient()


@pytest.fixture
def integration_api() -> APIClient:
    """n8n: the integration API key."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.OREE_API_KEY}")
    return client


@pytest.fixture
def alice(db):
    return ClientFactory(name="Alice Corp", email="alice@alice.test")


@pytest.fixture
def charlie(db):
    """A tenant who must never see anyone else's data."""
    return ClientFactory(name="Charlie Ltd", email="charlie@charlie.test")


def dashboard_api(client) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_access_token(client=client).token}")
    return api


@pytest.fixture
def alice_api(alice) -> APIClient:
    return dashboard_api(alice)


@pytest.fixture
def charlie_api(charlie) -> APIClient:
    return dashboard_api(charlie)


# --- The local Google sandbox, for Django-side tests ------------------------------------------


@pytest.fixture
def google_sandbox():
    """A running Google sandbox (OAuth + Gmail API) with one OAuth client and one account."""
    from google_sandbox.testing import make_test_sandbox

    with make_test_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(settings):
    """A running Google sandbox the app's settings point at (the sending and fault tests' world)."""
    from tests.sending.gmail import make_test_sandbox, point_settings_at

    with make_test_sandbox() as running:
        point_settings_at(settings, running)
        yield running


@pytest.fixture
def google_settings(settings, google_sandbox):
    """Point the app's Google settings at the sandbox, as an operator would with env variables."""
    from google_sandbox.testing import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_REDIRECT_URI

    settings.GOOGLE_CLIENT_ID = TEST_CLIENT_ID
    settings.GOOGLE_CLIENT_SECRET = TEST_CLIENT_SECRET
    settings.GOOGLE_REDIRECT_URI = TEST_REDIRECT_URI
    settings.GOOGLE_AUTH_URI = google_sandbox.auth_uri
    settings.GOOGLE_TOKEN_URI = google_sandbox.token_uri
    settings.GOOGLE_REVOKE_URI = google_sandbox.revoke_uri
    settings.GMAIL_API_ENDPOINT = google_sandbox.gmail_endpoint
    settings.GMAIL_HTTP_TIMEOUT = 5
    return settings


@pytest.fixture
def connect_mailbox(google_settings, google_sandbox):
    """Make a sandbox account and a connected Mailbox of `client` holding its real (encrypted) tokens."""
    from datetime import timedelta

    from django.utils import timezone

    from email_service.gmail.client import MailboxCredentials
    from email_service.mailboxes.credentials import store_credentials
    from email_service.models import Mailbox
    from google_sandbox.testing import TEST_SCOPES

    def connect(client, email: str, display_name: str = "Sam Sender", **fields) -> Mailbox:
        google_sandbox.add_account(email, display_name)
        tokens = google_sandbox.issue_tokens(email, TEST_SCOPES)
        mailbox = Mailbox.objects.create(
            client=client, email=email, display_name=display_name, connected_at=timezone.now(), **fields
        )
        store_credentials(
            mailbox=mailbox,
            credentials=MailboxCredentials(
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                expiry=timezone.now() + timedelta(seconds=int(tokens["expires_in"])),
                scopes=tuple(tokens["scope"].split()),
            ),
        )
        return mailbox

    return connect
