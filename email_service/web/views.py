"""Dashboard pages: server-rendered shells without data; their scripts fetch everything from /api/client/*.

The pages hold no secret and take no credential: the dashboard JWT lives in the browser's
sessionStorage and goes only to the API, so there is no second authentication system and no
second source of numbers. Every page carries a strict Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

# No inline script or style, nothing from another origin, no framing, no <base> or plugin tricks:
# a recipient's HTML that slipped past the escaping still could not run or load anything.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

View = Callable[..., HttpResponse]


def dashboard_headers(view: View) -> View:
    """Add the dashboard's security headers to every answer of `view`."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response["X-Frame-Options"] = "DENY"
        response["Referrer-Policy"] = "same-origin"
        response["Cross-Origin-Opener-Policy"] = "same-origin"
        response["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
        # The shells are the same for everyone, but a stale shell with fresh scripts would break.
        response["Cache-Control"] = "no-cache"
        return response

    return wrapper


# The signed-in pages, in navigation order: (name, title).
PAGES: list[tuple[str, str]] = [
    ("overview", "Overview"),
    ("campaigns", "Campaigns"),
    ("replies", "Replies"),
    ("mailboxes", "Mailboxes"),
    ("settings", "Settings"),
]


def page(name: str) -> View:
    """The view of one signed-in page: its template, the navigation, the page's script."""

    @require_safe
    @dashboard_headers
    def view(request: HttpRequest) -> HttpResponse:
        navigation = [
            {"name": other, "title": title, "url": reverse(f"dashboard:{other}"), "current": other == name}
            for other, title in PAGES
        ]
        return render(
            request, f"dashboard/{name}.html", {"page": name, "title": dict(PAGES)[name], "navigation": navigation}
        )

    view.__name__ = f"{name}_page"
    return view


@require_safe
@dashboard_headers
def login_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/login.html", {"page": "login", "title": "Sign in"})
