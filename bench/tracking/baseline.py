"""Baselines: the same bytes and headers as the pixel and the click, without any recording."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from email_service.api.tracking import NO_STORE, pixel_response
from email_service.tracking.hits import cached_destination

DESTINATION = "https://example.com/pricing?plan=pro#annual"


def baseline_click() -> HttpResponse:
    response = HttpResponseRedirect(DESTINATION)
    response["Cache-Control"] = NO_STORE
    response["Referrer-Policy"] = "no-referrer"
    return response


class BaselineMiddleware:
    """Answers /bench/baseline/open/… and /bench/baseline/click/… exactly like the fast path, minus recording."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith("/bench/baseline/open/"):
            return pixel_response((request.method or "GET").upper())
        if path.startswith("/bench/baseline/click/"):
            return baseline_click()
        if path.startswith("/bench/baseline/lookup-click/"):
            # The same bytes as the real click, its destination found the same way (the Redis link
            # cache, the database on a miss), nothing recorded.
            url = cached_destination(path.rsplit("/", 1)[1])
            response = HttpResponseRedirect(url or DESTINATION)
            response["Cache-Control"] = NO_STORE
            response["Referrer-Policy"] = "no-referrer"
            return response
        return self.get_response(request)


def bare_pixel_view(request: HttpRequest) -> HttpResponse:
    """A bare Django view through the whole middleware stack (the earlier implementation's yardstick)."""
    return pixel_response((request.method or "GET").upper())
