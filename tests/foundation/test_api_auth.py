"""API key and dashboard token authentication, and the shape of every error."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.utils import timezone

from email_service.dashboard.sessions import JWT_AUDIENCE, JWT_ISSUER, issue_access_token, revoke_session
from tests.factories import EmailSendQueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def email():
    return EmailSendQueueFactory()


def status_url(lead_id) -> str:
    return f"/api/email/status/{lead_id}"


def assert_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code"}
    if code:
        assert body["code"] == code


def test_the_api_key_is_required(api, email):
    response = api.get(status_url(email.lead_id))
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_api_key_is_refused(api, email):
    api.credentials(HTTP_AUTHORIZATION="Bearer wrong-key-0123456789")
    assert_error(api.get(status_url(email.lead_id)), 401, "invalid_credential")


def test_the_right_api_key_is_accepted(integration_api, email):
    response = integration_api.get(status_url(email.lead_id))
    assert response.status_code == 200
    body = response.json()
    assert body["lead_id"] == str(email.lead_id)
    assert [row["queue_id"] for row in body["emails"]] == [str(email.pk)]
    assert body["emails"][0]["mailbox_email"] == email.mailbox.email


def test_an_api_key_in_the_query_string_is_not_accepted(api, email):
    response = api.get(status_url(email.lead_id), {"api_key": settings.OREE_API_KEY, "key": settings.OREE_API_KEY})
    assert_error(response, 401)


@pytest.mark.parametrize(
    "header", ["Token abc", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "bearer", "Bearer\tx", "Digest x"]
)
def test_an_unknown_or_malformed_authorization_is_a_clean_401(api, email, header):
    api.credentials(HTTP_AUTHORIZATION=header)
    assert_error(api.get(status_url(email.lead_id)), 401)


def test_a_client_token_cannot_use_an_integration_route(api, email):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_access_token(client=email.client).token}")
    assert_error(api.get(status_url(email.lead_id)), 403, "permission_denied")


def test_status_of_an_unknown_lead_is_404(integration_api):
    assert_error(integration_api.get(status_url(uuid.uuid4())), 404, "lead_not_found")


def test_status_filtered_by_another_client_is_404(integration_api, email, charlie):
    response = integration_api.get(status_url(email.lead_id), {"client_id": str(charlie.pk)})
    assert_error(response, 404)


def test_a_malformed_client_id_filter_is_a_400_naming_it(integration_api, email):
    response = integration_api.get(status_url(email.lead_id), {"client_id": "nope"})
    assert_error(response, 400)
    assert response.json()["field"] == "client_id"


def test_an_unknown_route_is_a_json_404(api):
    assert_error(api.get("/api/no/such/route"), 404, "not_found")


class TestDashboardTokens:
    """BearerAuthentication's JWT half, through a route that admits either credential."""

    def authenticate(self, token: str):
        from rest_framework.test import APIRequestFactory

        from email_service.api.auth import BearerAuthentication

        request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
        from rest_framework.request import Request

        return BearerAuthentication().authenticate(Request(request))

    def claims(self, client, **overrides):
        now = timezone.now()
        session = issue_access_token(client=client).session
        base = {
            "sub": str(client.pk),
            "jti": str(session.jti),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
            "aud": JWT_AUDIENCE,
            "iss": JWT_ISSUER,
        }
        return {**base, **overrides}

    def test_a_fresh_token_authenticates_its_client(self, alice):
        user, session = self.authenticate(issue_access_token(client=alice).token)
        assert user.client == alice
        assert session.client_id == alice.pk

    @pytest.mark.parametrize(
        "case", ["expired", "tampered", "none_alg", "other_key", "revoked", "inactive", "wrong_sub"]
    )
    def test_bad_tokens_are_refused(self, alice, charlie, case):
        from rest_framework.exceptions import AuthenticationFailed

        if case == "expired":
            token = jwt.encode(
                self.claims(alice, exp=int((timezone.now() - timedelta(seconds=5)).timestamp())),
                settings.JWT_SECRET_KEY,
                algorithm=settings.JWT_ALGORITHM,
            )
        elif case == "tampered":
            good = issue_access_token(client=alice).token
            header, payload, signature = good.split(".")
            token = f"{header}.{payload}.{signature[:-2]}AA"
        elif case == "none_alg":
            token = jwt.encode(self.claims(alice), None, algorithm="none")
        elif case == "other_key":
            token = jwt.encode(self.claims(alice), "another-secret-" * 4, algorithm="HS256")
        elif case == "revoked":
            issued = issue_access_token(client=alice)
            revoke_session(session=issued.session)
            token = issued.token
        elif case == "inactive":
            token = issue_access_token(client=alice).token
            alice.is_active = False
            alice.save(update_fields=["is_active"])
        else:
            token = jwt.encode(
                self.claims(alice, sub=str(charlie.pk)), settings.JWT_SECRET_KEY, algorithm=settings.JWT_ALGORITHM
            )
        with pytest.raises(AuthenticationFailed):
            self.authenticate(token)
