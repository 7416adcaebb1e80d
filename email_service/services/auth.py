"""Client accounts and their dashboard tokens: creation, password rules, JWT issue and check."""

from __future__ import annotations

import hmac
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from email_service.exceptions import AuthenticationError, Conflict, InvalidInput
from email_service.models import Campaign, Client, ClientSession

JWT_AUDIENCE = "oreestats-dashboard"
JWT_ISSUER = "oreestats"


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_timezone(name: str, *, field: str = "timezone") -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{name!r} is not an IANA time zone.", field=field, code="invalid_timezone") from None
    return name


class _PasswordUser:
    """What Django's password validators look at (UserAttributeSimilarityValidator reads attributes)."""

    def __init__(self, *, email: str, name: str) -> None:
        self.email = email
        self.username = email.split("@", 1)[0]
        self.first_name = name


def check_password_strength(password: str, *, email: str, name: str, field: str = "password") -> None:
    try:
        validate_password(password, user=_PasswordUser(email=email, name=name))  # type: ignore[arg-type]
    except ValidationError as error:
        raise InvalidInput(" ".join(error.messages), field=field, code="weak_password") from None


def create_client(*, name: str, email: str, password: str, timezone_name: str = "UTC") -> Client:
    """Create a client account with its default campaign, or raise without creating anything."""
    name = name.strip()
    if not name:
        raise InvalidInput("A client needs a name.", field="name", code="required")
    email = normalize_email(email)
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidInput(f"{email!r} is not a valid email address.", field="email", code="invalid_email") from None
    check_timezone(timezone_name)
    check_password_strength(password, email=email, name=name)
    if Client.objects.filter(email=email).exists():
        raise Conflict(f"A client with the email {email} already exists.", field="email", code="duplicate_email")
    client = Client(name=name, email=email, timezone=timezone_name)
    client.set_password(password)
    try:
        with transaction.atomic():
            client.save()
            Campaign.objects.create(client=client, name="Default campaign", is_default=True)
    except IntegrityError:
        # Race condition: another request created the same email between the check and the insert.
        raise Conflict(
            f"A client with the email {email} already exists.", field="email", code="duplicate_email"
        ) from None
    return client


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    session: ClientSession


def issue_access_token(
    *, client: Client, ip: str | None = None, user_agent: str = "", now: datetime | None = None
) -> IssuedToken:
    """A signed, revocable dashboard token: its `jti` names a ClientSession row."""
    now = now or timezone.now()
    expires_at = now + timedelta(seconds=settings.JWT_ACCESS_TTL_SECONDS)
    session = ClientSession.objects.create(
        client=client, created_at=now, expires_at=expires_at, ip=ip, user_agent=user_agent[:512]
    )
    claims = {
        "sub": str(client.pk),
        "jti": str(session.jti),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
    }
    token = jwt.encode(claims, settings.JWT_SECRET_KEY, algorithm=settings.JWT_ALGORITHM)
    return IssuedToken(token=token, expires_at=expires_at, session=session)


def authenticate_access_token(token: str) -> ClientSession:
    """The live session behind a dashboard token, or AuthenticationError (never says which check failed)."""
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SECRET_KEY,
            # Pinned: a token cannot choose its own algorithm (no `none`, no HS/RS confusion).
            algorithms=[settings.JWT_ALGORITHM],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]},
        )
        jti = uuid.UUID(str(claims["jti"]))
        subject = uuid.UUID(str(claims["sub"]))
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("The token has expired.", code="token_expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise AuthenticationError("The token is invalid.", code="token_invalid") from None
    session = ClientSession.objects.select_related("client").filter(jti=jti).first()
    if session is None or not hmac.compare_digest(str(session.client_id), str(subject)):
        raise AuthenticationError("The token is invalid.", code="token_invalid")
    if not session.is_live():
        raise AuthenticationError("The token has been revoked.", code="token_revoked")
    if not session.client.is_active:
        raise AuthenticationError("This account is disabled.", code="account_disabled")
    return session


def revoke_session(*, session: ClientSession) -> None:
    ClientSession.objects.filter(pk=session.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
