"""Dashboard sessions: login, tokens that cannot be forged or outlive a logout, throttling, timing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from email_service.dashboard import sessions as auth
from email_service.exceptions import AuthenticationError, Throttled
from email_service.models import ClientSession
from tests.dashboard.conftest import clear_login_throttle
from tests.factories import DEFAULT_PASSWORD, ClientFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Another-Strong-Secret-77"


def login(api: APIClient, email: str, password: str, ip: str = "203.0.113.7", **extra):
    return api.post("/api/client/login", {"email": email, "password": password}, format="json", REMOTE_ADDR=ip, **extra)


def bearer(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, str], claims: dict[str, object], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def assert_401(response, code: str | None = None):
    assert response.status_code == 401, response.content
    if code:
        assert response.json()["code"] == code


@pytest.fixture
def alice_token(alice) -> str:
    return str(login(APIClient(), "alice@alice.test", DEFAULT_PASSWORD).json()["access_token"])


def test_login_answers_the_contracts_shape_and_the_token_opens_the_dashboard(api, alice):
    response = login(api, "  Alice@Alice.TEST ", DEFAULT_PASSWORD, HTTP_USER_AGENT="Firefox")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at", "client"}
    assert body["token_type"] == "Bearer"
    assert body["client"] == {"id": str(alice.pk), "name": "Alice Corp", "email": "alice@alice.test", "timezone": "UTC"}
    assert response["Cache-Control"] == "no-store"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == str(alice.pk) and {"exp", "iat", "jti"} <= set(claims)
    session = ClientSession.objects.get(jti=claims["jti"])
    assert (session.client_id, session.ip, session.user_agent) == (alice.pk, "203.0.113.7", "Firefox")
    assert bearer(body["access_token"]).get("/api/client/stats").status_code == 200
    alice.refresh_from_db()
    assert alice.last_login_at is not None


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(api, alice):
    wrong = login(api, "alice@alice.test", "Not-Her-Password-1")
    unknown = login(api, "nobody@nowhere.test", "Not-Her-Password-1")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Invalid email or password.", "code": "invalid_credentials"}


def test_a_login_without_a_password_is_a_400_naming_it(api):
    response = api.post("/api/client/login", {"email": "alice@alice.test"}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "password"


def test_a_disabled_client_can_neither_log_in_nor_use_a_live_token(api, alice, alice_token):
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert login(api, "alice@alice.test", DEFAULT_PASSWORD).json()["code"] == "invalid_credentials"
    assert_401(bearer(alice_token).get("/api/client/stats"), "account_disabled")


def test_an_expired_token_is_refused(alice):
    old = auth.issue_access_token(
        client=alice, now=timezone.now() - timedelta(seconds=settings.JWT_ACCESS_TTL_SECONDS + 5)
    )
    assert_401(bearer(old.token).get("/api/client/stats"), "token_expired")


def test_a_tampered_token_is_refused(alice, charlie, alice_token):
    header, payload, signature = alice_token.split(".")
    claims = claims_of(alice_token) | {"sub": str(charlie.pk)}
    assert_401(bearer(f"{header}.{b64(json.dumps(claims).encode())}.{signature}").get("/api/client/stats"))
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert_401(bearer(f"{header}.{payload}.{flipped}").get("/api/client/stats"))


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_a_token_signed_with_another_hmac_algorithm_is_refused(alice_token):
    assert settings.JWT_ALGORITHM == "HS256"
    hs512 = jwt.encode(claims_of(alice_token), settings.JWT_SECRET_KEY, algorithm="HS512")
    assert_401(bearer(hs512).get("/api/client/stats"), "token_invalid")


def test_rs256_and_rs256_hs256_confusion_tokens_are_refused(alice_token):
    claims = claims_of(alice_token)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A genuine RS256 signature by a key we never trusted.
    assert_401(bearer(jwt.encode(claims, private_key, algorithm="RS256")).get("/api/client/stats"))
    # The classic confusion: HS256 keyed with a public key.
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = forge(header, claims).rsplit(".", 1)[0].encode()
    confused = forge(header, claims, hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    assert_401(bearer(confused).get("/api/client/stats"))
    # Header says RS256, signature is a valid HMAC with our secret: the header must not pick the check.
    header = {"alg": "RS256", "typ": "JWT"}
    signing_input = forge(header, claims).rsplit(".", 1)[0].encode()
    relabelled = forge(
        header, claims, hmac.new(settings.JWT_SECRET_KEY.encode(), signing_input, hashlib.sha256).digest()
    )
    assert_401(bearer(relabelled).get("/api/client/stats"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_none_token_is_refused(alice_token, alg):
    assert_401(bearer(forge({"alg": alg, "typ": "JWT"}, claims_of(alice_token))).get("/api/client/stats"))


def test_logout_revokes_the_token_server_side(alice_token):
    api = bearer(alice_token)
    assert api.post("/api/client/logout").status_code == 204
    assert ClientSession.objects.get(jti=claims_of(alice_token)["jti"]).revoked_at is not None
    assert_401(api.get("/api/client/stats"), "token_revoked")
    assert_401(api.post("/api/client/logout"), "token_revoked")


def test_a_password_change_revokes_the_clients_other_tokens_and_keeps_this_one(api, alice, charlie, charlie_api):
    here = login(api, "alice@alice.test", DEFAULT_PASSWORD).json()["access_token"]
    elsewhere = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="198.51.100.1").json()["access_token"]
    response = bearer(here).post(
        "/api/client/change-password",
        {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        format="json",
    )
    assert response.status_code == 200
    assert response.json() == {"sessions_revoked": 1}
    assert_401(bearer(elsewhere).get("/api/client/stats"), "token_revoked")
    assert bearer(here).get("/api/client/stats").status_code == 200
    assert charlie_api.get("/api/client/stats").status_code == 200  # another tenant's sessions live on
    assert login(api, "alice@alice.test", DEFAULT_PASSWORD).status_code == 401
    assert login(api, "alice@alice.test", NEW_PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("current", "new", "field", "code"),
    [
        ("Wrong-Current-Pass-9", NEW_PASSWORD, "current_password", "wrong_password"),
        (DEFAULT_PASSWORD, "password", "new_password", "weak_password"),
        (DEFAULT_PASSWORD, "short1!", "new_password", "weak_password"),
        (DEFAULT_PASSWORD, "12345678901", "new_password", "weak_password"),
        (DEFAULT_PASSWORD, DEFAULT_PASSWORD, "new_password", "password_unchanged"),
    ],
)
def test_a_refused_password_change_names_the_field_and_changes_nothing(alice, alice_api, current, new, field, code):
    response = alice_api.post(
        "/api/client/change-password", {"current_password": current, "new_password": new}, format="json"
    )
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["code"]) == (field, code)
    alice.refresh_from_db()
    assert alice.check_password(DEFAULT_PASSWORD)


def test_repeated_failures_for_one_address_are_throttled_even_with_the_right_password(api, alice, charlie):
    for attempt in range(auth.LOGIN_FAILURES_PER_EMAIL):
        assert (
            login(api, "alice@alice.test", f"Wrong-{attempt}-password", ip=f"198.51.100.{attempt}").status_code == 401
        )
    response = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="198.51.100.99")
    assert response.status_code == 429
    assert response.json()["code"] == "login_throttled"
    assert 1 <= int(response["Retry-After"]) <= auth.LOGIN_THROTTLE_WINDOW_SECONDS
    # Another account from the same IPs is not locked out by Alice's attacker.
    assert login(api, "charlie@charlie.test", DEFAULT_PASSWORD, ip="198.51.100.1").status_code == 200


def test_unknown_addresses_are_throttled_like_known_ones(api):
    for _ in range(auth.LOGIN_FAILURES_PER_EMAIL):
        assert login(api, "ghost@nowhere.test", "Wrong-password-1").status_code == 401
    assert login(api, "ghost@nowhere.test", "Wrong-password-1").status_code == 429


def test_one_ip_spraying_many_addresses_is_throttled_and_other_ips_are_not(api, alice):
    for n in range(auth.LOGIN_FAILURES_PER_IP):
        assert login(api, f"user{n}@spray.test", "Wrong-password-1", ip="192.0.2.66").status_code == 401
    blocked = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="192.0.2.66")
    assert blocked.status_code == 429 and "Retry-After" in blocked
    assert login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="192.0.2.67").status_code == 200


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_ip_throttle(api, alice):
    for n in range(auth.LOGIN_FAILURES_PER_IP):
        response = login(
            api, f"user{n}@spray.test", "Wrong-password-1", ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 192.0.2.66"
        )
        assert response.status_code == 401
    forged = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="8.8.8.8, 192.0.2.66")
    assert forged.status_code == 429
    garbage = login(api, "alice@alice.test", DEFAULT_PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert garbage.status_code == 200  # unparseable: no IP key, never a 500


def test_the_throttle_lifts_when_its_window_ends(alice):
    start = timezone.now()
    for _ in range(auth.LOGIN_FAILURES_PER_EMAIL):
        with pytest.raises(AuthenticationError):
            auth.login(email="alice@alice.test", password="Wrong-password-1", ip="192.0.2.1", now=start)
    with pytest.raises(Throttled) as throttled:
        auth.login(email="alice@alice.test", password=DEFAULT_PASSWORD, ip="192.0.2.1", now=start)
    later = start + timedelta(seconds=throttled.value.retry_after)
    assert auth.login(email="alice@alice.test", password=DEFAULT_PASSWORD, ip="192.0.2.1", now=later).client == alice


class SlowerPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Enough rounds that a skipped hash check would show in the timing, few enough to keep the test short."""

    iterations = 60_000


@pytest.mark.slow
@override_settings(PASSWORD_HASHERS=["tests.dashboard.test_sessions.SlowerPBKDF2PasswordHasher"])
def test_an_unknown_email_costs_the_same_time_as_a_wrong_password(api):
    ClientFactory(email="known@timing.test")

    def one_attempt(email: str) -> float:
        clear_login_throttle()
        # The test client runs the view in this thread: its CPU time is the work the server did
        # (the hash above all), and other processes' load on the machine does not blur it.
        started = time.thread_time()
        assert login(api, email, "Wrong-password-for-timing").status_code == 401
        return time.thread_time() - started

    one_attempt("warm-up@timing.test")
    # Interleaved, so anything left that varies over time hits both sides alike.
    timings: dict[str, list[float]] = {"known@timing.test": [], "unknown@timing.test": []}
    for _ in range(11):
        for email, samples in timings.items():
            samples.append(one_attempt(email))
    known, unknown = (statistics.median(samples) for samples in timings.values())
    assert min(known, unknown) > 0.01, "the hash must dominate, or this test could not fail"
    assert abs(known - unknown) <= 0.25 * max(known, unknown), (known, unknown)


class PasswordChangedDuringCheckHasher(PBKDF2PasswordHasher):
    """Stands for a change-password request that commits while a login is checking the old hash."""

    iterations = 1000

    def verify(self, password: str, encoded: str) -> bool:
        ok = super().verify(password, encoded)
        from email_service.models import Client

        Client.objects.filter(email="alice@alice.test").update(password=self.encode(NEW_PASSWORD, self.salt()))
        return ok


def test_a_login_checked_against_the_old_password_gets_no_session_once_it_changed(alice):
    racing = override_settings(PASSWORD_HASHERS=["tests.dashboard.test_sessions.PasswordChangedDuringCheckHasher"])
    with racing, pytest.raises(AuthenticationError):
        auth.login(email="alice@alice.test", password=DEFAULT_PASSWORD)
    assert not ClientSession.objects.filter(client=alice).exists()
