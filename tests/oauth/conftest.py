"""Play the browser through our initiate route, the sandbox's consent page and our callback."""

from __future__ import annotations

import urllib.parse

import pytest
import requests

from google_sandbox.testing import TEST_REDIRECT_URI


def consent(authorization_url: str) -> str:
    """Follow Google's consent page once; the query string it sends the browser back to us with."""
    response = requests.get(authorization_url, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(TEST_REDIRECT_URI + "?")
    return urllib.parse.urlsplit(location).query


def query_params(url_or_query: str) -> dict[str, str]:
    query = urllib.parse.urlsplit(url_or_query).query if "://" in url_or_query else url_or_query
    return {key: values[0] for key, values in urllib.parse.parse_qs(query).items()}


@pytest.fixture
def initiate(google_settings):
    """GET /api/oauth/initiate/<client_id> as `api`; returns Google's consent URL (via the 302)."""

    def run(api, client, **params) -> str:
        suffix = ("?" + urllib.parse.urlencode(params)) if params else ""
        response = api.get(f"/api/oauth/initiate/{client.pk}{suffix}")
        assert response.status_code == 302, response.content
        return str(response["Location"])

    return run


@pytest.fixture
def connect_through_google(initiate, api):
    """The whole round trip; returns our callback's response (JSON when `json=True`)."""

    def run(initiator_api, client, *, json: bool = True, **params):
        query = consent(initiate(initiator_api, client, **params))
        headers = {"HTTP_ACCEPT": "application/json"} if json else {}
        return api.get(f"/api/oauth/callback?{query}", **headers)

    return run
