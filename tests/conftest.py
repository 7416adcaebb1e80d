"""Shared fixtures: API clients for each audience, and the personas Alice, Bob and Charlie."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from email_service.services.auth import issue_access_token
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
