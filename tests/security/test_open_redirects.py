"""Every redirecting route sends only to our own pages or to a destination stored in the database.

The click endpoint's probes are tests/tracking/test_endpoints.py (path and query tricks, foreign
links, stored non-http destinations); the OAuth callback's `return_to` is tests/oauth/test_connect.py;
the dashboard login's `next` runs in a browser in tests/web/test_dashboard_in_a_browser.py.
Here: the root redirect and the unknown-click answer, against the usual open-redirect payloads.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

pytestmark = pytest.mark.django_db

HOSTILE = ["https://evil.test/", "//evil.test/", "/\\evil.test", "javascript:alert(1)", "https:evil.test"]
PARAMS = ["next", "url", "return_to", "redirect", "destination"]


@pytest.mark.parametrize("param", PARAMS)
def test_the_root_redirects_only_to_the_dashboard(api, param):
    for hostile in HOSTILE:
        response = api.get(f"/?{param}={quote(hostile, safe='')}")
        assert response.status_code == 302
        assert response["Location"] == "/dashboard/"


@pytest.mark.parametrize("param", PARAMS)
def test_an_unknown_click_is_a_404_whatever_the_query_says(api, param):
    for hostile in HOSTILE:
        response = api.get(f"/api/track/click/unknown-token?{param}={quote(hostile, safe='')}")
        assert response.status_code == 404
        assert "Location" not in response
