"""Connecting a Gmail mailbox to a client through Google's OAuth consent (CONTRACT.md "OAuth").

Two steps, two requests:

1. :func:`start_mailbox_connection` (an authenticated initiator: the API key or the client's own
   dashboard token) keeps the PKCE verifier server-side, encrypted, under a random nonce, and
   returns Google's consent URL whose ``state`` is the nonce and client id signed with
   ``SECRET_KEY`` (Django signing: HMAC-SHA256, timestamped).
2. :func:`complete_mailbox_connection` (Google's redirect, unauthenticated) checks the signature
   and age of ``state``, claims its row once with a conditional UPDATE, exchanges the code with
   the stored verifier, learns the address from ``getProfile`` and creates or reconnects the
   mailbox with its tokens encrypted. A failure after Google issued tokens revokes them: nothing
   is half-created.
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from email_service.exceptions import Conflict, DependencyFailed, InvalidInput, OreeError
from email_service.gmail import client as google
from email_service.mailboxes.credentials import decrypt_secret, encrypt_secret
from email_service.mailboxes.lifecycle import resume_held_emails
from email_service.models import Client, Mailbox, OAuthState

logger = logging.getLogger(__name__)

SCOPE_OPENID = "openid"
SCOPE_USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
REQUESTED_SCOPES: tuple[str, ...] = (google.SCOPE_SEND, google.SCOPE_READONLY, SCOPE_OPENID, SCOPE_USERINFO_EMAIL)
"""What the consent screen asks for: send and read Gmail, and who the user is."""
REQUIRED_SCOPES: tuple[str, ...] = google.GMAIL_SCOPES
"""What the grant must include to be kept (the identity scopes are informative: the address comes from getProfile)."""

STATE_LIFETIME = timedelta(minutes=10)
STATE_SALT = "email_service.oauth.state"
DEFAULT_RETURN_TO = "/dashboard/mailboxes/"
RETURN_TO_MAX_LENGTH = 200


class OAuthConnectionError(OreeError):
    """The connection attempt ended without a mailbox; ``code`` says why (shown as a page or JSON)."""

    default_code = "oauth_failed"


@dataclass(frozen=True)
class ConnectionResult:
    """A mailbox connected (``created``) or reconnected, and how many held emails were resumed."""

    mailbox: Mailbox
    created: bool
    resumed_emails: int
    return_to: str


def validate_return_to(value: str | None) -> str:
    """A local absolute path (``/…``) to send the browser back to; anything else is refused.

    Refuses schemes, hosts, protocol-relative ``//host`` and ``/\\host`` forms, and control
    characters, so the callback can never become an open redirect.
    """
    if not value:
        return DEFAULT_RETURN_TO
    if len(value) > RETURN_TO_MAX_LENGTH:
        raise InvalidInput("return_to is too long.", code="invalid_return_to", field="return_to")
    parts = urllib.parse.urlsplit(value)
    if (
        not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or "\\" in value
        or parts.scheme
        or parts.netloc
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise InvalidInput(
            "return_to must be a path on this site, such as /dashboard/mailboxes/.",
            code="invalid_return_to",
            field="return_to",
        )
    return value


def start_mailbox_connection(
    *,
    client: Client,
    initiated_by: str,
    return_to: str | None = None,
    login_hint: str | None = None,
    config: google.GoogleConfig | None = None,
) -> str:
    """Google's consent URL for connecting a mailbox to ``client``; the caller has authorised the initiator."""
    config = config or google.GoogleConfig.from_settings()
    target = validate_return_to(return_to)
    nonce = secrets.token_urlsafe(32)
    state = signing.dumps({"n": nonce, "c": str(client.pk)}, salt=STATE_SALT, compress=False)
    url, verifier = google.start_authorization(config, state, REQUESTED_SCOPES, login_hint=login_hint)
    now = timezone.now()
    OAuthState.objects.create(
        nonce=nonce,
        client=client,
        code_verifier_encrypted=encrypt_secret(verifier),
        initiated_by=initiated_by,
        return_to=target,
        created_at=now,
        expires_at=now + STATE_LIFETIME,
    )
    return url


def _claim_state(state: str) -> OAuthState:
    """The state's row, marked used by this request alone (a replay finds it used)."""
    if not state:
        raise OAuthConnectionError("The sign-in link is incomplete: it carries no state.", code="invalid_state")
    try:
        payload: Any = signing.loads(state, salt=STATE_SALT, max_age=STATE_LIFETIME)
    except signing.SignatureExpired:
        raise OAuthConnectionError(
            "This sign-in link has expired. Start connecting the mailbox again.", code="state_expired"
        ) from None
    except signing.BadSignature:
        raise OAuthConnectionError(
            "This sign-in link is not valid. Start connecting the mailbox again.", code="invalid_state"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), str) or not isinstance(payload.get("c"), str):
        raise OAuthConnectionError("This sign-in link is not valid.", code="invalid_state")
    now = timezone.now()
    claimed = OAuthState.objects.filter(
        nonce=payload["n"], client_id=payload["c"], used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    row = OAuthState.objects.select_related("client").filter(nonce=payload["n"], client_id=payload["c"]).first()
    if row is None:
        raise OAuthConnectionError("This sign-in link is not valid.", code="invalid_state")
    if not claimed:
        if row.used_at is not None:
            raise OAuthConnectionError(
                "This sign-in link was already used. Start connecting the mailbox again.", code="state_used"
            )
        raise OAuthConnectionError(
            "This sign-in link has expired. Start connecting the mailbox again.", code="state_expired"
        )
    return row


def _revoke_quietly(config: google.GoogleConfig, credentials: google.MailboxCredentials) -> None:
    token = credentials.refresh_token or credentials.access_token
    if not token:
        return
    try:
        google.revoke_token(config, token)
    except (google.GmailError, ValueError) as exc:
        # The grant stays listed in the user's Google account; we keep no copy of its tokens.
        logger.warning("could not revoke a grant we are not keeping (%s)", type(exc).__name__)


def _exchange(config: google.GoogleConfig, code: str, verifier: str) -> google.MailboxCredentials:
    try:
        credentials, _granted = google.exchange_code(config, code, verifier, required_scopes=REQUIRED_SCOPES)
    except google.ScopesNotGranted as exc:
        missing = ", ".join(s.rsplit("/", 1)[-1] for s in exc.missing)
        raise OAuthConnectionError(
            f"Google did not grant every permission OreeStats needs (missing: {missing}). "
            "Connect again and allow sending and reading mail.",
            code="missing_scopes",
        ) from None
    except google.AuthorizationFailed as exc:
        raise OAuthConnectionError(
            f"Google refused the sign-in ({exc.error}). Start connecting the mailbox again.", code="exchange_failed"
        ) from None
    except google.GmailUnavailable:
        raise DependencyFailed(
            "Google could not be reached. Try connecting again in a moment.", code="google_unavailable"
        ) from None
    return credentials


def _profile_address(config: google.GoogleConfig, credentials: google.MailboxCredentials) -> google.Profile:
    try:
        with google.GmailClient(config, credentials) as gmail:
            return gmail.get_profile()
    except google.GmailError:
        raise OAuthConnectionError(
            "Google issued access but Gmail did not tell us the mailbox address. Try connecting again.",
            code="profile_failed",
        ) from None


def _token_fields(credentials: google.MailboxCredentials) -> dict[str, Any]:
    return {
        "access_token_encrypted": encrypt_secret(credentials.access_token or ""),
        "refresh_token_encrypted": encrypt_secret(credentials.refresh_token or ""),
        "token_expires_at": credentials.expiry,
        "scopes": " ".join(credentials.scopes),
    }


def _connect(
    *, client: Client, profile: google.Profile, credentials: google.MailboxCredentials
) -> tuple[Mailbox, bool, int]:
    address = profile.email_address.strip().lower()
    now = timezone.now()
    for _attempt in range(2):
        with transaction.atomic():
            existing = Mailbox.objects.select_for_update().filter(email__iexact=address).first()
            if existing is None:
                try:
                    with transaction.atomic():
                        mailbox = Mailbox.objects.create(
                            client=client,
                            email=address,
                            daily_limit=client.mailbox_daily_limit,
                            history_id=profile.history_id,
                            connected_at=now,
                            **_token_fields(credentials),
                        )
                except IntegrityError:
                    continue  # Race condition: a concurrent callback created it; look again.
                return mailbox, True, 0
            if existing.client_id != client.pk:
                raise Conflict(
                    f"{address} is already connected to another OreeStats account. "
                    "Disconnect it there first, or connect a different mailbox.",
                    code="mailbox_owned_by_another_client",
                )
            fields: dict[str, Any] = {
                **_token_fields(credentials),
                "connected_at": now,
                "disconnected_at": None,
                "last_error": "",
                "last_error_at": None,
                "updated_at": now,
            }
            if existing.status == Mailbox.Status.DISCONNECTED:
                # An operator's pause or Gmail's daily limit still stands after a reconnection.
                fields.update(status=Mailbox.Status.ACTIVE, status_reason="")
            if not existing.history_id:
                fields["history_id"] = profile.history_id
            Mailbox.objects.filter(pk=existing.pk).update(**fields)
            existing.refresh_from_db()
            resumed = resume_held_emails(mailbox=existing)
            return existing, False, resumed
    raise Conflict("The mailbox is being connected by another request; try again.", code="connection_in_progress")


def complete_mailbox_connection(
    *, params: dict[str, str], config: google.GoogleConfig | None = None
) -> ConnectionResult:
    """Google's redirect: verify state, exchange the code, and connect the mailbox it belongs to."""
    config = config or google.GoogleConfig.from_settings()
    state = params.get("state") or ""
    row = _claim_state(state)
    try:
        code = google.code_from_callback(params, expected_state=state)
    except google.AuthorizationFailed as exc:
        if exc.error == "access_denied":
            raise OAuthConnectionError(
                "Access was not granted on Google's consent screen, so no mailbox was connected.",
                code="access_denied",
            ) from None
        raise OAuthConnectionError(
            f"Google did not complete the sign-in ({exc.error}). Start connecting the mailbox again.",
            code="authorization_failed",
        ) from None
    credentials = _exchange(config, code, decrypt_secret(row.code_verifier_encrypted))
    try:
        profile = _profile_address(config, credentials)
        mailbox, created, resumed = _connect(client=row.client, profile=profile, credentials=credentials)
    except Conflict:
        # Not revoked: Google keeps one grant per user and OAuth app, so revoking these tokens
        # would also cut off the other account that already holds this mailbox. We keep none.
        raise
    except Exception:
        _revoke_quietly(config, credentials)
        raise
    logger.info("mailbox %s %s for client %s", mailbox.pk, "connected" if created else "reconnected", row.client_id)
    return ConnectionResult(mailbox=mailbox, created=created, resumed_emails=resumed, return_to=row.return_to)
