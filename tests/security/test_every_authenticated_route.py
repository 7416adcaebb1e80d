"""Every authenticated route, found in the URL configuration, against every way in that must fail.

Integration routes (API key): no key, a wrong key, the key in the query string, a client's JWT.
Client routes (JWT): no token, the API key, and the JWT attacks (alg none, HS/RS confusion,
expired, revoked, tampered payload, tampered signature, another audience or issuer). Each must be
a clean JSON 401/403 that changes nothing. Tenant isolation for /api/client/ (Charlie on Alice's
ids) is the matrix of tests/dashboard/test_isolation.py; its other half for the routes that take
a client id (OAuth initiate) is here. A route added later joins these matrices by itself.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from email_service.dashboard.sessions import JWT_AUDIENCE, JWT_ISSUER, issue_access_token, revoke_session
from email_service.models import Campaign, Client, ClientSession, EmailSendQueue, Mailbox
from tests.factories import CampaignFactory, EmailSendQueueFactory, MailboxFactory
from tests.security.routes import all_routes, fill

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
INTEGRATION = [r for r in ROUTES if r.audience == "integration"]
CLIENT = [r for r in ROUTES if r.audience == "client" and r.route != "api/client/login"]
EITHER = [r for r in ROUTES if r.audience == "integration_or_client"]
AUTHENTICATED = INTEGRATION + CLIENT + EITHER


def test_the_matrix_knows_every_route_and_who_may_call_it():
    found = {(r.route, r.method, r.audience) for r in ROUTES}
    assert {
        ("api/email/send", "post", "integration"),
        ("api/email/send/batch", "post", "integration"),
        ("api/email/status/<uuid:lead_id>", "get", "integration"),
        ("api/track/reply", "post", "integration"),
        ("api/oauth/initiate/<uuid:client_id>", "get", "integration_or_client"),
        ("api/client/stats", "get", "client"),
        ("api/client/mailboxes/<uuid:mailbox_id>", "delete", "client"),
        ("api/client/settings", "put", "client"),
        ("api/client/login", "post", "public"),
        ("api/track/click/<str:click_id>", "get", "public"),
    } <= found
    assert len(AUTHENTICATED) >= 17


@pytest.fixture
def world(alice):
    campaign = CampaignFactory(client=alice, name="Alice campaign")
    mailbox = MailboxFactory(client=alice, email="alice-sdr@alice.test")
    message = EmailSendQueueFactory(client=alice, campaign=campaign, mailbox=mailbox)
    return {
        "alice": alice,
        "ids": {
            "campaign_id": str(campaign.pk),
            "mailbox_id": str(mailbox.pk),
            "lead_id": str(message.lead_id),
            "client_id": str(alice.pk),
        },
    }


def state_of(alice) -> tuple[object, ...]:
    alice.refresh_from_db()
    return (
        alice.password,
        alice.timezone,
        alice.mailbox_daily_limit,
        sorted(Campaign.objects.filter(client=alice).values_list("name", "status")),
        sorted(EmailSendQueue.objects.values_list("id", "status")),
        sorted(Mailbox.objects.values_list("email", "status")),
        ClientSession.objects.filter(revoked_at__isnull=True).count(),
        Client.objects.count(),
    )


BODY = {"email_subject": "x", "email_body": "<p>x</p>", "timezone": "Asia/Tokyo", "emails": []}


def call(api, route, world, **extra):
    url = fill(route.route, world["ids"])
    if route.method in ("post", "put", "patch"):
        return getattr(api, route.method)(url, BODY, format="json", **extra)
    return getattr(api, route.method)(url, **extra)


def assert_refused(response, statuses=(401,), route=None):
    assert response.status_code in statuses, (route and route.id, response.content)
    body = response.json()
    assert set(body) >= {"detail", "code"}
    assert "Traceback" not in body["detail"]


# --- The integration key ---------------------------------------------------------------------


def test_no_key_is_a_401(world, api):
    before = state_of(world["alice"])
    for route in INTEGRATION + EITHER:
        assert_refused(call(api, route, world), route=route)
    assert state_of(world["alice"]) == before


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-key",
        "Bearer " + "test-api-key-0123456789"[:-1],  # one character short
        "Bearer test-api-key-01234567890",  # one character more
        "Token test-api-key-0123456789",  # another scheme
        "test-api-key-0123456789",  # no scheme
        "Bearer",
        "Basic dGVzdDp0ZXN0",
    ],
)
def test_a_wrong_or_malformed_key_is_a_401(header, world, api):
    before = state_of(world["alice"])
    for route in INTEGRATION + EITHER:
        assert_refused(call(api, route, world, HTTP_AUTHORIZATION=header), route=route)
    assert state_of(world["alice"]) == before


@pytest.mark.parametrize("name", ["api_key", "key", "access_token", "token", "authorization"])
def test_the_key_in_the_query_string_is_not_accepted(name, world, api):
    before = state_of(world["alice"])
    for route in INTEGRATION + EITHER:
        url = f"{fill(route.route, world['ids'])}?{name}={settings.OREE_API_KEY}"
        response = getattr(api, route.method)(url, BODY, format="json") if route.method != "get" else api.get(url)
        assert_refused(response, route=route)
    assert state_of(world["alice"]) == before


def test_a_client_jwt_cannot_use_an_integration_route(world, api, charlie):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_access_token(client=charlie).token}")
    before = state_of(world["alice"])
    for route in INTEGRATION:
        assert_refused(call(api, route, world), statuses=(401, 403), route=route)
    assert state_of(world["alice"]) == before


def test_the_api_key_cannot_use_a_client_route(world, integration_api):
    before = state_of(world["alice"])
    for route in CLIENT:
        assert_refused(call(integration_api, route, world), statuses=(401, 403), route=route)
    assert state_of(world["alice"]) == before


def test_charlie_cannot_start_a_connection_for_alice_on_any_initiate_route(world, charlie_api):
    for route in EITHER:
        response = call(charlie_api, route, world)
        assert response.status_code == 404, response.content


# --- JWT attacks on every client route -------------------------------------------------------


NONE_HEADER = b'{"alg":"none","typ":"JWT"}'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(alice, **overrides):
    session = issue_access_token(client=alice).session
    now = int(time.time())
    claims = {
        "sub": str(alice.pk),
        "jti": str(session.jti),
        "iat": now,
        "exp": now + 600,
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
    }
    claims.update(overrides)
    return claims, session


def _rsa_public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def forge(kind: str, alice) -> str:
    secret = settings.JWT_SECRET_KEY
    if kind == "alg_none":
        claims, _ = _claims(alice)
        return f"{_b64(NONE_HEADER)}.{_b64(json.dumps(claims).encode())}."
    if kind == "alg_none_with_signature":
        claims, _ = _claims(alice)
        good = jwt.encode(claims, secret, algorithm="HS256").split(".")
        return f"{_b64(NONE_HEADER)}.{good[1]}.{good[2]}"
    if kind == "hs_rs_confusion":
        # Signed with HMAC over an RSA public key, claiming RS256 in the header: an RS verifier that
        # also accepts HS would check it with the public key as the HMAC secret.
        claims, _ = _claims(alice)
        pem = _rsa_public_pem()
        header = _b64(b'{"alg":"RS256","typ":"JWT"}')
        payload = _b64(json.dumps(claims).encode())
        import hashlib
        import hmac as hmac_module

        signature = hmac_module.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"
    if kind == "hs512_with_our_secret":
        claims, _ = _claims(alice)
        return jwt.encode(claims, secret, algorithm="HS512")
    if kind == "other_secret":
        claims, _ = _claims(alice)
        return jwt.encode(claims, "not-our-secret-but-long-enough-0123456789", algorithm="HS256")
    if kind == "expired":
        claims, _ = _claims(alice, iat=int(time.time()) - 3600, exp=int(time.time()) - 60)
        return jwt.encode(claims, secret, algorithm="HS256")
    if kind == "revoked":
        issued = issue_access_token(client=alice)
        revoke_session(session=issued.session)
        return issued.token
    if kind == "tampered_payload":
        good = issue_access_token(client=alice).token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(good[1] + "=="))
        claims["exp"] += 10**6
        return f"{good[0]}.{_b64(json.dumps(claims).encode())}.{good[2]}"
    if kind == "tampered_signature":
        head, body, sig = issue_access_token(client=alice).token.split(".")
        middle = len(sig) // 2  # a character that carries only signature bits, no padding
        flipped = "A" if sig[middle] != "A" else "B"
        return f"{head}.{body}.{sig[:middle]}{flipped}{sig[middle + 1 :]}"
    if kind == "unknown_jti":
        claims, _ = _claims(alice, jti=str(uuid.uuid4()))
        return jwt.encode(claims, secret, algorithm="HS256")
    if kind == "subject_swapped":
        claims, _ = _claims(alice, sub=str(uuid.uuid4()))
        return jwt.encode(claims, secret, algorithm="HS256")
    if kind == "wrong_audience":
        claims, _ = _claims(alice, aud="someone-else")
        return jwt.encode(claims, secret, algorithm="HS256")
    if kind == "wrong_issuer":
        claims, _ = _claims(alice, iss="someone-else")
        return jwt.encode(claims, secret, algorithm="HS256")
    if kind == "no_exp":
        claims, _ = _claims(alice)
        del claims["exp"]
        return jwt.encode(claims, secret, algorithm="HS256")
    raise AssertionError(kind)


ATTACKS = [
    "alg_none",
    "alg_none_with_signature",
    "hs_rs_confusion",
    "hs512_with_our_secret",
    "other_secret",
    "expired",
    "revoked",
    "tampered_payload",
    "tampered_signature",
    "unknown_jti",
    "subject_swapped",
    "wrong_audience",
    "wrong_issuer",
    "no_exp",
]


def test_an_honest_token_passes_every_client_route_check_so_the_attacks_can_fail(world, api):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_access_token(client=world['alice']).token}")
    for route in CLIENT:
        if route.method == "get":
            assert call(api, route, world).status_code == 200, route.id


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_expired_or_revoked_jwt_is_a_401_and_changes_nothing(attack, world, api):
    token = forge(attack, world["alice"])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    before = state_of(world["alice"])
    for route in CLIENT + EITHER:
        assert_refused(call(api, route, world), route=route)
    assert state_of(world["alice"]) == before


def test_no_token_is_a_401(world, api):
    for route in CLIENT:
        assert_refused(call(api, route, world), route=route)
