"""Login when the shared cache (Redis) is unreachable: never a 500, and the throttle still holds.

The throttle falls back to counting in the web process (services/auth.py explains the choice):
a Redis outage neither locks every client out nor lifts the limit on password guessing.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from redis.exceptions import ConnectionError as RedisConnectionError

from email_service.dashboard import sessions as auth
from tests.dashboard.conftest import clear_login_throttle
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_unreachable(settings):
    # Port 1 on loopback: connections are refused at once.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "KEY_PREFIX": "oree-unreachable",
        }
    }
    auth._LOCAL_FAILURES._counts.clear()
    with pytest.raises(RedisConnectionError):  # the premise: the cache really is down
        cache.get("anything")
    yield
    auth._LOCAL_FAILURES._counts.clear()


def login(api, email, password, ip="203.0.113.7"):
    return api.post("/api/client/login", {"email": email, "password": password}, format="json", REMOTE_ADDR=ip)


def test_with_redis_down_the_right_password_still_signs_in(redis_unreachable, api, alice):
    response = login(api, "alice@alice.test", DEFAULT_PASSWORD)
    assert response.status_code == 200, response.content
    assert (
        api.get("/api/client/stats", HTTP_AUTHORIZATION=f"Bearer {response.json()['access_token']}").status_code == 200
    )


def test_with_redis_down_a_wrong_password_is_a_401_not_a_500(redis_unreachable, api, alice):
    response = login(api, "alice@alice.test", "Wrong-password-1")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


def test_with_redis_down_repeated_failures_are_still_throttled(redis_unreachable, api, alice, charlie):
    for attempt in range(auth.LOGIN_FAILURES_PER_EMAIL):
        assert (
            login(api, "alice@alice.test", f"Wrong-{attempt}-password", ip=f"198.51.100.{attempt}").status_code == 401
        )
    response = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="198.51.100.99")
    assert response.status_code == 429
    assert response.json()["code"] == "login_throttled"
    assert int(response["Retry-After"]) >= 1
    assert login(api, "charlie@charlie.test", DEFAULT_PASSWORD, ip="198.51.100.1").status_code == 200


def test_failures_counted_during_an_outage_still_count_when_redis_is_back(settings, api, alice):
    auth._LOCAL_FAILURES._counts.clear()
    original = settings.CACHES
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    try:
        for attempt in range(auth.LOGIN_FAILURES_PER_EMAIL - 1):
            assert login(api, "alice@alice.test", f"Wrong-{attempt}-password").status_code == 401
        settings.CACHES = original
        assert login(api, "alice@alice.test", "Wrong-last-password").status_code == 401
        assert login(api, "alice@alice.test", DEFAULT_PASSWORD).status_code == 429
    finally:
        auth._LOCAL_FAILURES._counts.clear()
        clear_login_throttle()
