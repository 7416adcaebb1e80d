"""The dashboard's pages as served: a strict Content-Security-Policy and nothing inline for it to allow."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client as HttpClient

PAGES = [
    "/dashboard/",
    "/dashboard/login/",
    "/dashboard/campaigns/",
    "/dashboard/replies/",
    "/dashboard/mailboxes/",
    "/dashboard/settings/",
]


class InlineFinder(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style elements and attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name == "style":
                self.problems.append(f"style attribute on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name} handler on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL on <{tag}>")
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"third-party {name} {value}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("script body")


@pytest.mark.parametrize("path", PAGES)
def test_every_dashboard_page_carries_a_strict_content_security_policy(db, path):
    response = HttpClient().get(path)
    assert response.status_code == 200
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response["Content-Security-Policy"].split(";")
        if directive.strip()
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", PAGES)
def test_no_dashboard_page_needs_anything_inline_or_from_another_site(db, path):
    finder = InlineFinder()
    finder.feed(HttpClient().get(path).content.decode())
    assert finder.problems == []


def test_dashboard_pages_hold_no_data_and_take_no_credentials(db, alice):
    """The shells are the same for everyone: the numbers come only from the API, with the token."""
    page = HttpClient().get("/dashboard/")
    assert page.status_code == 200
    assert alice.name not in page.content.decode()
    assert "Set-Cookie" not in page.headers


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_dashboard_pages_only_answer_reads(db, method):
    assert getattr(HttpClient(), method)("/dashboard/settings/").status_code == 405


def test_the_site_root_leads_to_the_dashboard(db):
    response = HttpClient().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"


@pytest.mark.parametrize("path", ["/dashboard/login/", "/dashboard/settings/"])
def test_forms_cannot_be_submitted_natively_before_their_script_runs(db, path):
    """A GET submission would put the password in the URL: forms POST and start disabled."""
    html = HttpClient().get(path).content.decode()
    forms = re.findall(r"<form\b[^>]*>", html)
    assert forms and all('method="post"' in form for form in forms)
    buttons = re.findall(r'<button type="submit"[^>]*>', html)
    assert buttons and all(" disabled" in button for button in buttons)
