"""Dashboard fixtures: a clean login throttle per test, and a frozen clock for the selectors."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.core.cache import cache
from django.utils import timezone


def clear_login_throttle() -> None:
    """Forget every failed-login counter of this test run (keys live under this worker's prefix)."""
    redis = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    for key in redis.scan_iter(match=cache.make_key("login-throttle:*")):
        redis.delete(key)


@pytest.fixture(autouse=True)
def _fresh_login_throttle():
    clear_login_throttle()
    yield
    clear_login_throttle()


@pytest.fixture
def freeze_now(monkeypatch):
    """Freeze `django.utils.timezone.now` (what every service reads) at a given instant.

    Tokens must be issued before freezing: PyJWT checks `exp` against the real clock.
    """

    def freeze(moment: datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: moment)

    return freeze
