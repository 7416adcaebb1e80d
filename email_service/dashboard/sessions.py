"""Client accounts and their dashboard tokens: creation, password rules, JWT issue and check."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from django.conf import settings
from django.contrib.auth.hashers import check_password, get_hasher, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from email_service.exceptions import AuthenticationError, Conflict, InvalidInput, Throttled
from email_service.models import Campaign, Client, ClientSession

logger = logging.getLogger(__name__)

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


# --- Dashboard login, logout and password change -------------------------------------------------

# Failed logins allowed per window before a 429: per address (guessing one account's password)
# and per IP (spraying many accounts from one machine). Fixed windows keyed by their start, so
# Retry-After is exact and no counter outlives its window.
LOGIN_FAILURES_PER_EMAIL = 5
LOGIN_FAILURES_PER_IP = 30
LOGIN_THROTTLE_WINDOW_SECONDS = 15 * 60


@dataclass(frozen=True)
class LoginResult:
    issued: IssuedToken
    client: Client


def _throttle_keys(*, email: str, ip: str | None, window: int) -> list[tuple[str, int]]:
    # Hashed: the cache never holds an address or an IP in clear.
    email_key = hashlib.sha256(email.encode()).hexdigest()[:32]
    keys = [(f"login-throttle:email:{email_key}:{window}", LOGIN_FAILURES_PER_EMAIL)]
    if ip:
        ip_key = hashlib.sha256(ip.encode()).hexdigest()[:32]
        keys.append((f"login-throttle:ip:{ip_key}:{window}", LOGIN_FAILURES_PER_IP))
    return keys


def _login_window(now: datetime) -> tuple[int, int]:
    """The current throttle window's number and the seconds left in it (at least 1)."""
    seconds = int(now.timestamp())
    window = seconds // LOGIN_THROTTLE_WINDOW_SECONDS
    return window, max(1, (window + 1) * LOGIN_THROTTLE_WINDOW_SECONDS - seconds)


def _dummy_password_hash() -> str:
    """A hash made by the current default hasher, so an unknown address costs one real check."""
    hasher = get_hasher("default")
    key = f"{hasher.algorithm}:{getattr(hasher, 'iterations', '')}"
    cached = _DUMMY_HASHES.get(key)
    if cached is None:
        cached = _DUMMY_HASHES[key] = make_password(secrets.token_urlsafe(16), hasher=hasher)
    return cached


_DUMMY_HASHES: dict[str, str] = {}


class _LocalFailureCounts:
    """The throttle's fallback while the shared cache (Redis) is unreachable: counts in this process.

    Why not refuse logins (503) instead: a Redis outage would then lock every client out of the
    dashboard. Why not let everything through: an outage would lift the throttle. Counting per
    process keeps guessing bounded (the limit times the number of web processes, per window) for
    as long as the outage lasts, and the keys carry their window so nothing outlives it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def get_many(self, keys: list[str]) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            return {
                key: count
                for key in keys
                if (entry := self._counts.get(key))
                for count, until in [entry]
                if until > now
            }

    def incr(self, key: str, timeout: int) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 10_000:  # bounded: drop what has expired
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            count, until = self._counts.get(key, (0, now + timeout))
            self._counts[key] = (count + 1 if until > now else 1, until if until > now else now + timeout)

    def delete(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)


_LOCAL_FAILURES = _LocalFailureCounts()


def _cache_unreachable(exc: Exception) -> None:
    # The exception's text names the host, never a secret; the traceback is not worth a page per login.
    logger.warning("Login throttle: the shared cache is unreachable (%s); counting in this process", type(exc).__name__)


def _failure_counts(keys: list[str]) -> dict[str, int]:
    try:
        counts: dict[str, int] = cache.get_many(keys)
    except Exception as exc:  # noqa: BLE001 - any cache backend error (redis, OSError) means "unreachable"
        _cache_unreachable(exc)
        return _LOCAL_FAILURES.get_many(keys)
    local = _LOCAL_FAILURES.get_many(keys)  # failures counted during an outage still count
    return {key: counts.get(key, 0) + local.get(key, 0) for key in keys}


def _count_failure(key: str, timeout: int) -> None:
    try:
        # add() then incr(): atomic in Redis; the key expires with its window.
        cache.add(key, 0, timeout=timeout)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: count afresh
            cache.set(key, 1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - see _failure_counts
        _cache_unreachable(exc)
        _LOCAL_FAILURES.incr(key, timeout)


def _forget_failures(key: str) -> None:
    _LOCAL_FAILURES.delete(key)
    try:
        cache.delete(key)
    except Exception as exc:  # noqa: BLE001 - see _failure_counts
        _cache_unreachable(exc)


def login(
    *, email: str, password: str, ip: str | None = None, user_agent: str = "", now: datetime | None = None
) -> LoginResult:
    """Check a client's credentials and issue a token; Throttled after repeated failures.

    An unknown address, a wrong password and a disabled account all answer the same error after
    the same work (one password hash check), so neither the answer nor its timing tells whether
    an account exists. A throttled attempt is refused before the password is looked at.
    """
    now = now or timezone.now()
    email = normalize_email(email)
    window, retry_after = _login_window(now)
    keys = _throttle_keys(email=email, ip=ip, window=window)
    counts = _failure_counts([key for key, _ in keys])
    if any(counts.get(key, 0) >= limit for key, limit in keys):
        raise Throttled(
            "Too many failed login attempts; try again later.", retry_after=retry_after, code="login_throttled"
        )
    client = Client.objects.filter(email=email).first()
    if client is None:
        check_password(password, _dummy_password_hash())
        ok = False
    else:
        ok = client.check_password(password) and client.is_active
    if not ok:
        for key, _ in keys:
            _count_failure(key, retry_after + 1)
        raise AuthenticationError("Invalid email or password.", code="invalid_credentials")
    assert client is not None
    with transaction.atomic():
        # Race condition: a password change may commit between the hash check above and here. Under
        # the row lock change_password also takes, either our session exists before it revokes the
        # others, or we see the new hash and refuse: no session outlives the password it came from.
        locked = Client.objects.select_for_update().get(pk=client.pk)
        if not hmac.compare_digest(locked.password, client.password) or not locked.is_active:
            raise AuthenticationError("Invalid email or password.", code="invalid_credentials")
        Client.objects.filter(pk=client.pk).update(last_login_at=now)
        issued = issue_access_token(client=locked, ip=ip, user_agent=user_agent, now=now)
    _forget_failures(keys[0][0])
    return LoginResult(issued=issued, client=locked)


def logout(*, session: ClientSession) -> None:
    """Revoke the token of this session; the same token is refused from now on."""
    revoke_session(session=session)


@transaction.atomic
def change_password(*, client: Client, session: ClientSession, current_password: str, new_password: str) -> int:
    """Set a new password and revoke every other live token of the client; returns how many were revoked."""
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if not locked.check_password(current_password):
        raise InvalidInput("The current password is wrong.", field="current_password", code="wrong_password")
    if new_password == current_password:
        raise InvalidInput(
            "The new password must differ from the current one.", field="new_password", code="password_unchanged"
        )
    check_password_strength(new_password, email=locked.email, name=locked.name, field="new_password")
    now = timezone.now()
    locked.set_password(new_password)
    locked.save(update_fields=["password", "updated_at"])
    client.password = locked.password
    return (
        ClientSession.objects.filter(client=client, revoked_at__isnull=True)
        .exclude(pk=session.pk)
        .update(revoked_at=now)
    )
