"""All of the sandbox's state and behaviour, independent of HTTP.

Every public method takes the one lock, so the threaded server can call them
from any handler thread. Nothing here sleeps: latency faults are returned to
the caller (the HTTP layer), which sleeps outside the lock.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import hashlib
import random
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors, mime
from .errors import ControlError, OAuthError
from .models import (
    DEFAULT_RETRY_AT,
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_ACCEPT_THEN_RESET,
    FAULT_AUTH_ERROR,
    FAULT_BACKEND_ERROR,
    FAULT_DAILY_LIMIT,
    FAULT_INVALID_GRANT,
    FAULT_KINDS,
    FAULT_LATENCY,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_ANY,
    OP_TOKEN_REFRESH,
    OPERATIONS,
    AppliedFault,
    MailboxMessage,
)
from .query import QueryError, Searchable, compile_query

GMAIL_SCOPE_PREFIX = "https://www.googleapis.com/auth/"
SCOPE_FULL = "https://mail.google.com/"
SCOPE_SEND = GMAIL_SCOPE_PREFIX + "gmail.send"
SCOPE_COMPOSE = GMAIL_SCOPE_PREFIX + "gmail.compose"
SCOPE_MODIFY = GMAIL_SCOPE_PREFIX + "gmail.modify"
SCOPE_READONLY = GMAIL_SCOPE_PREFIX + "gmail.readonly"
SCOPE_METADATA = GMAIL_SCOPE_PREFIX + "gmail.metadata"

SEND_SCOPES = frozenset({SCOPE_FULL, SCOPE_SEND, SCOPE_COMPOSE, SCOPE_MODIFY})
READ_SCOPES = frozenset({SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY})
METADATA_SCOPES = READ_SCOPES | {SCOPE_METADATA}
PROFILE_SCOPES = METADATA_SCOPES | {SCOPE_COMPOSE}

CODE_LIFETIME = 600.0
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
ERROR_FAULTS = frozenset(
    {
        FAULT_RATE_LIMIT,
        FAULT_DAILY_LIMIT,
        FAULT_AUTH_ERROR,
        FAULT_INVALID_GRANT,
        FAULT_BACKEND_ERROR,
        FAULT_UNAVAILABLE,
    }
)
DISCONNECT_FAULTS = frozenset({FAULT_ACCEPT_THEN_RESET, FAULT_ACCEPT_THEN_CLOSE})
_TOKEN_ENDPOINT_KINDS = frozenset(
    {
        FAULT_INVALID_GRANT,
        FAULT_AUTH_ERROR,
        FAULT_RATE_LIMIT,
        FAULT_BACKEND_ERROR,
        FAULT_UNAVAILABLE,
        FAULT_LATENCY,
        FAULT_ACCEPT_THEN_RESET,
        FAULT_ACCEPT_THEN_CLOSE,
    }
)


def _applicable(kind: str, op: str) -> bool:
    """Whether a fault of ``kind`` can hit a request of operation ``op``."""
    if op == OP_TOKEN_REFRESH:
        return kind in _TOKEN_ENDPOINT_KINDS
    return kind != FAULT_INVALID_GRANT


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] | None  # None: any redirect URI is accepted


@dataclass
class Account:
    email: str
    display_name: str


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    email: str
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str | None
    issue_refresh_token: bool
    expires_at: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class Grant:
    """What one successful code exchange created (a refresh token, if offline)."""

    grant_id: str
    client_id: str
    email: str
    scopes: tuple[str, ...]
    refresh_token: str | None
    offline: bool
    revoked: bool = False


@dataclass
class AccessToken:
    token: str
    grant_id: str
    email: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class StoredMessage:
    gmail_id: str
    thread_id: str
    label_ids: list[str]
    raw: bytes
    header_list: list[tuple[str, str]]
    text_body: str | None
    html_body: str | None
    internal_date_ms: int
    received_at: float
    history_id: int
    direction: str  # "sent" | "inbound"

    @property
    def message_id(self) -> str | None:
        return mime.get_header(self.header_list, "Message-ID")

    @functools.cached_property
    def search_view(self) -> Searchable:
        """Built once: a stored message's headers and labels never change."""
        return self.searchable()

    def searchable(self) -> Searchable:
        address_headers = ("from", "to", "cc", "bcc")
        subject = mime.get_header(self.header_list, "Subject") or ""
        text = " ".join([subject, self.text_body or "", self.html_body or ""]).lower()
        return Searchable(
            label_ids=frozenset(self.label_ids),
            headers=self.header_list,
            addresses={h: mime.addresses(self.header_list, h) for h in address_headers},
            text=text,
            internal_date_ms=self.internal_date_ms,
            message_id=self.message_id,
        )

    def snippet(self) -> str:
        return mime.snippet(self.text_body, self.html_body)

    def public(self) -> MailboxMessage:
        return MailboxMessage(
            gmail_id=self.gmail_id,
            thread_id=self.thread_id,
            label_ids=list(self.label_ids),
            header_list=list(self.header_list),
            headers=mime.first_headers(self.header_list),
            text_body=self.text_body,
            html_body=self.html_body,
            raw_b64=base64.b64encode(self.raw).decode("ascii"),
            received_at=self.received_at,
            history_id=self.history_id,
        )


@dataclass(frozen=True)
class HistoryRecord:
    history_id: int
    gmail_id: str
    thread_id: str
    label_ids: tuple[str, ...]


@dataclass
class Mailbox:
    email: str
    history_id: int
    history_floor: int
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    threads: dict[str, list[str]] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)
    replace_message_ids: bool = False


@dataclass
class FaultRule:
    op: str
    kind: str
    remaining: int | None  # None: until cleared
    mailbox: str | None
    latency: float
    retry_at: str

    def matches(self, op: str, mailbox: str | None) -> bool:
        if self.op not in (OP_ANY, op) or not _applicable(self.kind, op):
            return False
        return self.mailbox is None or (mailbox is not None and self.mailbox == mailbox)


@dataclass
class RandomFaults:
    probability: float
    kinds: tuple[str, ...]
    op: str
    mailbox: str | None
    latency: float
    retry_at: str
    rng: random.Random


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: sleep ``latency`` seconds, then apply ``kind``."""

    latency: float = 0.0
    kind: str | None = None
    retry_at: str = DEFAULT_RETRY_AT


@dataclass(frozen=True)
class AuthorizeOutcome:
    """The authorisation endpoint's answer: a redirect or an HTML page."""

    status: int
    location: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who an access token belongs to."""

    email: str
    scopes: frozenset[str]


def _norm_email(value: str) -> str:
    return value.strip().lower()


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _page(items: list[Any], page_token: str | None, max_results: str | None) -> tuple[list[Any], str | None]:
    try:
        size = int(max_results) if max_results else DEFAULT_PAGE_SIZE
        start = int(page_token) if page_token else 0
    except ValueError as exc:
        raise errors.invalid_argument("Invalid pageToken or maxResults") from exc
    if size < 1 or start < 0:
        raise errors.invalid_argument("Invalid pageToken or maxResults")
    size = min(size, MAX_PAGE_SIZE)
    chunk = items[start : start + size]
    next_token = str(start + size) if start + size < len(items) else None
    return chunk, next_token


def _with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = parts.query
    extra = urllib.parse.urlencode(list(params))
    query = f"{query}&{extra}" if query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


# --------------------------------------------------------------------------- state


class SandboxState:
    """The sandbox's accounts, OAuth grants, mailboxes and scripted faults."""

    def __init__(
        self,
        *,
        clients: Iterable[OAuthClient] = (),
        accounts: Iterable[Account] = (),
        default_account: str | None = None,
        access_token_lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._initial_clients = tuple(clients)
        self._initial_accounts = tuple(accounts)
        self._initial_default = default_account
        self._initial_lifetime = access_token_lifetime
        self.reset()

    # ---------------------------------------------------------------- setup

    def reset(self) -> None:
        """Forget everything except the clients and accounts given at construction."""
        with self._lock:
            self._clients: dict[str, OAuthClient] = {}
            self._accounts: dict[str, Account] = {}
            self._mailboxes: dict[str, Mailbox] = {}
            self._codes: dict[str, AuthCode] = {}
            self._grants: dict[str, Grant] = {}
            self._refresh_tokens: dict[str, str] = {}  # token -> grant id
            self._access_tokens: dict[str, AccessToken] = {}
            self._rules: list[FaultRule] = []
            self._random: RandomFaults | None = None
            self._fault_log: list[AppliedFault] = []
            self._default_account: str | None = None
            self._deny_consent = False
            self._grant_only: frozenset[str] | None = None
            self._token_lifetime = self._initial_lifetime
            self._next_id = int(self._clock() * 1000) << 20  # 16 hex digits, like Gmail's ids
            self._history_rng = random.Random(0x6D61696C)
            for client in self._initial_clients:
                self._clients[client.client_id] = client
            for account in self._initial_accounts:
                self._add_account(account.email, account.display_name)
            if self._initial_default:
                self.set_default_account(self._initial_default)

    def _add_account(self, email_address: str, display_name: str) -> None:
        key = _norm_email(email_address)
        if "@" not in key:
            raise ControlError(400, f"not an email address: {email_address!r}")
        self._accounts[key] = Account(email=key, display_name=display_name)
        if key not in self._mailboxes:
            start = 1000 + self._history_rng.randint(0, 9000)
            self._mailboxes[key] = Mailbox(email=key, history_id=start, history_floor=start)

    def add_account(self, email_address: str, display_name: str = "") -> None:
        with self._lock:
            self._add_account(email_address, display_name)

    def accounts(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"email": a.email, "display_name": a.display_name} for a in self._accounts.values()]

    def set_default_account(self, email_address: str | None) -> None:
        with self._lock:
            if email_address is None:
                self._default_account = None
                return
            key = _norm_email(email_address)
            if key not in self._accounts:
                raise ControlError(404, f"unknown account {email_address!r}")
            self._default_account = key

    def register_client(self, client_id: str, client_secret: str, redirect_uris: Sequence[str] | None = None) -> None:
        if not client_id or not client_secret:
            raise ControlError(400, "client_id and client_secret are required")
        uris = tuple(redirect_uris) if redirect_uris is not None else None
        with self._lock:
            self._clients[client_id] = OAuthClient(client_id, client_secret, uris)

    def set_consent(self, *, deny: bool = False, grant_only: Sequence[str] | None = None) -> None:
        """How the next consents go: deny them, or grant only these of the requested scopes."""
        with self._lock:
            self._deny_consent = deny
            self._grant_only = frozenset(grant_only) if grant_only is not None else None

    def set_access_token_lifetime(self, seconds: float) -> None:
        if seconds <= 0:
            raise ControlError(400, "lifetime must be positive")
        with self._lock:
            self._token_lifetime = float(seconds)

    def set_replace_message_ids(self, email_address: str, enabled: bool) -> None:
        with self._lock:
            self._mailbox(email_address).replace_message_ids = bool(enabled)

    def _mailbox(self, email_address: str) -> Mailbox:
        box = self._mailboxes.get(_norm_email(email_address))
        if box is None:
            raise ControlError(404, f"unknown mailbox {email_address!r}")
        return box

    # ---------------------------------------------------------------- OAuth

    def authorize(self, params: Mapping[str, Sequence[str]], self_url: str) -> AuthorizeOutcome:
        """The authorisation endpoint: consent at once, or list accounts to pick from."""
        with self._lock:
            client_id = _first(params, "client_id") or ""
            client = self._clients.get(client_id)
            if client is None:
                return _error_page(401, "invalid_client", "The OAuth client was not found.")
            redirect_uri = _first(params, "redirect_uri")
            if not redirect_uri:
                return _error_page(400, "invalid_request", "Missing required parameter: redirect_uri")
            if client.redirect_uris is not None and redirect_uri not in client.redirect_uris:
                return _error_page(
                    400,
                    "redirect_uri_mismatch",
                    "The redirect URI in the request does not match the ones authorised for the OAuth client.",
                )
            state = _first(params, "state")

            def fail(error: str) -> AuthorizeOutcome:
                pairs = [("error", error)] + ([("state", state)] if state is not None else [])
                return AuthorizeOutcome(302, location=_with_query(redirect_uri, pairs))

            if _first(params, "response_type") != "code":
                return fail("unsupported_response_type")
            requested = tuple(dict.fromkeys((_first(params, "scope") or "").split()))
            if not requested:
                return _error_page(400, "invalid_request", "Missing required parameter: scope")
            method = _first(params, "code_challenge_method")
            challenge = _first(params, "code_challenge")
            if challenge is not None:
                method = method or "plain"
                if method not in ("S256", "plain"):
                    return fail("invalid_request")
            elif method is not None:
                return fail("invalid_request")

            hint = _first(params, "login_hint")
            account_email: str | None = None
            if hint and _norm_email(hint) in self._accounts:
                account_email = _norm_email(hint)
            elif self._default_account is not None:
                account_email = self._default_account
            if account_email is None:
                return self._chooser_page(params, self_url)

            if self._deny_consent:
                return fail("access_denied")
            granted = [s for s in requested if self._grant_only is None or s in self._grant_only]
            if not granted:
                return fail("access_denied")
            if (_first(params, "include_granted_scopes") or "").lower() == "true":
                for grant in self._active_grants(account_email, client_id):
                    granted.extend(s for s in grant.scopes if s not in granted)
            offline = (_first(params, "access_type") or "online") == "offline"
            prompts = (_first(params, "prompt") or "").split()
            has_offline = any(g.offline for g in self._active_grants(account_email, client_id))
            issue_refresh = offline and ("consent" in prompts or not has_offline)
            code = "4/0" + secrets.token_urlsafe(40)
            self._codes[code] = AuthCode(
                code=code,
                client_id=client_id,
                redirect_uri=redirect_uri,
                email=account_email,
                scopes=tuple(granted),
                challenge=challenge,
                challenge_method=method,
                issue_refresh_token=issue_refresh,
                expires_at=self._clock() + CODE_LIFETIME,
            )
            pairs = []
            if state is not None:
                pairs.append(("state", state))
            pairs += [("code", code), ("scope", " ".join(granted)), ("authuser", "0")]
            if prompts:
                pairs.append(("prompt", " ".join(prompts)))
            return AuthorizeOutcome(302, location=_with_query(redirect_uri, pairs))

    def _chooser_page(self, params: Mapping[str, Sequence[str]], self_url: str) -> AuthorizeOutcome:
        import html

        flat = [(k, v) for k, values in params.items() if k != "login_hint" for v in values]
        if not self._accounts:
            body = "<p>No accounts exist in this sandbox. Add one through the control API.</p>"
        else:
            links = []
            for account in self._accounts.values():
                href = self_url + "?" + urllib.parse.urlencode([*flat, ("login_hint", account.email)])
                label = html.escape(account.display_name or account.email)
                links.append(f'<li><a href="{html.escape(href)}">{label}</a> &lt;{html.escape(account.email)}&gt;</li>')
            body = "<p>Choose an account to continue:</p><ul>" + "".join(links) + "</ul>"
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Choose an account"
            f"</title></head><body><h1>Google sandbox sign-in</h1>{body}</body></html>"
        )
        return AuthorizeOutcome(200, html=page)

    def _active_grants(self, email_address: str, client_id: str) -> list[Grant]:
        return [
            g for g in self._grants.values() if g.email == email_address and g.client_id == client_id and not g.revoked
        ]

    def _authenticate_client(self, form: Mapping[str, str], authorization: str | None) -> OAuthClient:
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
                client_id, _, secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise OAuthError(401, "invalid_client", "Unauthorized") from exc
        if not client_id:
            raise OAuthError(400, "invalid_request", "Missing required parameter: client_id")
        client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if not secret or not secrets.compare_digest(secret, client.client_secret):
            raise OAuthError(401, "invalid_client", "Unauthorized")
        return client

    def _issue_access_token(self, grant: Grant, scopes: Sequence[str]) -> dict[str, Any]:
        token = "ya29.a0" + secrets.token_urlsafe(48)
        lifetime = self._token_lifetime
        self._access_tokens[token] = AccessToken(
            token=token,
            grant_id=grant.grant_id,
            email=grant.email,
            scopes=frozenset(scopes),
            expires_at=self._clock() + lifetime,
        )
        return {
            "access_token": token,
            "expires_in": max(1, round(lifetime)),
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }

    def exchange_code(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint's ``authorization_code`` grant."""
        with self._lock:
            client = self._authenticate_client(form, authorization)
            code_value = form.get("code")
            if not code_value:
                raise OAuthError(400, "invalid_request", "Missing required parameter: code")
            code = self._codes.get(code_value)
            if code is None or code.client_id != client.client_id:
                raise OAuthError(400, "invalid_grant", "Malformed auth code.")
            if code.used:
                # RFC 6749 4.1.2: a replayed code revokes what it was exchanged for.
                if code.grant_id is not None:
                    self._revoke_grant(self._grants[code.grant_id])
                raise OAuthError(400, "invalid_grant", "Bad Request")
            code.used = True  # single use, whatever the outcome below
            if self._clock() > code.expires_at:
                raise OAuthError(400, "invalid_grant", "Bad Request")
            if form.get("redirect_uri") != code.redirect_uri:
                raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
            if code.challenge is not None:
                verifier = form.get("code_verifier")
                if not verifier:
                    raise OAuthError(400, "invalid_grant", "Missing code verifier.")
                expected = _s256(verifier) if code.challenge_method == "S256" else verifier
                if not secrets.compare_digest(expected, code.challenge):
                    raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
            grant = Grant(
                grant_id=secrets.token_hex(8),
                client_id=client.client_id,
                email=code.email,
                scopes=code.scopes,
                refresh_token=None,
                offline=code.issue_refresh_token,
            )
            if code.issue_refresh_token:
                grant.refresh_token = "1//0" + secrets.token_urlsafe(64)
                self._refresh_tokens[grant.refresh_token] = grant.grant_id
            self._grants[grant.grant_id] = grant
            code.grant_id = grant.grant_id
            answer = self._issue_access_token(grant, code.scopes)
            if grant.refresh_token is not None:
                answer["refresh_token"] = grant.refresh_token
            return answer

    def issue_tokens(
        self,
        email_address: str,
        scopes: Sequence[str],
        *,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Skip the browser: grant ``scopes`` of ``email_address`` to a client, as a code exchange would.

        Returns the token endpoint's answer (access_token, refresh_token, expires_in, scope).
        ``client_id`` may be left out when exactly one client is registered.
        """
        with self._lock:
            key = _norm_email(email_address)
            if key not in self._accounts:
                raise ControlError(404, f"unknown account {email_address!r}")
            if client_id is None:
                if len(self._clients) != 1:
                    raise ControlError(400, "client_id is required when several clients are registered")
                client_id = next(iter(self._clients))
            if client_id not in self._clients:
                raise ControlError(404, f"unknown client {client_id!r}")
            if not scopes:
                raise ControlError(400, "at least one scope is required")
            grant = Grant(
                grant_id=secrets.token_hex(8),
                client_id=client_id,
                email=key,
                scopes=tuple(dict.fromkeys(scopes)),
                refresh_token="1//0" + secrets.token_urlsafe(64),
                offline=True,
            )
            assert grant.refresh_token is not None
            self._refresh_tokens[grant.refresh_token] = grant.grant_id
            self._grants[grant.grant_id] = grant
            answer = self._issue_access_token(grant, grant.scopes)
            answer["refresh_token"] = grant.refresh_token
            return answer

    def grant_for_refresh_token(self, token: str | None) -> Grant | None:
        with self._lock:
            grant_id = self._refresh_tokens.get(token or "")
            grant = self._grants.get(grant_id) if grant_id else None
            return grant if grant is not None and not grant.revoked else None

    def refresh(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint's ``refresh_token`` grant (after faults were applied)."""
        with self._lock:
            client = self._authenticate_client(form, authorization)
            grant = self.grant_for_refresh_token(form.get("refresh_token"))
            if grant is None:
                raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
            if grant.client_id != client.client_id:
                raise OAuthError(401, "unauthorized_client", "Unauthorized")
            wanted = (form.get("scope") or "").split()
            if wanted and not set(wanted) <= set(grant.scopes):
                raise OAuthError(400, "invalid_scope", "Bad Request")
            return self._issue_access_token(grant, wanted or grant.scopes)

    def _revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True
        if grant.refresh_token is not None:
            self._refresh_tokens.pop(grant.refresh_token, None)
        for token in [t for t, a in self._access_tokens.items() if a.grant_id == grant.grant_id]:
            del self._access_tokens[token]

    def revoke(self, token: str | None) -> None:
        """The revoke endpoint: a refresh or access token revokes its whole grant."""
        with self._lock:
            grant: Grant | None = None
            if token and token in self._refresh_tokens:
                grant = self._grants[self._refresh_tokens[token]]
            elif token and token in self._access_tokens:
                grant = self._grants[self._access_tokens[token].grant_id]
            if grant is None or grant.revoked:
                raise OAuthError(400, "invalid_token", "Token expired or revoked")
            self._revoke_grant(grant)

    def revoke_grants(self, email_address: str) -> int:
        """The user removes the app's access in their Google account: revoke every grant."""
        with self._lock:
            key = _norm_email(email_address)
            grants = [g for g in self._grants.values() if g.email == key and not g.revoked]
            for grant in grants:
                self._revoke_grant(grant)
            return len(grants)

    def authenticate(self, authorization: str | None) -> Principal:
        """Check a Gmail request's bearer token."""
        with self._lock:
            if not authorization or not authorization.lower().startswith("bearer "):
                raise errors.unauthenticated(missing=True)
            access = self._access_tokens.get(authorization[7:].strip())
            if access is None or self._clock() >= access.expires_at:
                raise errors.unauthenticated()
            return Principal(email=access.email, scopes=access.scopes)

    # ---------------------------------------------------------------- faults

    def add_fault(
        self,
        op: str,
        kind: str,
        *,
        count: int | None = 1,
        mailbox: str | None = None,
        latency: float = 0.0,
        retry_at: str | None = None,
    ) -> None:
        if op not in OPERATIONS:
            raise ControlError(400, f"unknown operation {op!r}; one of {sorted(OPERATIONS)}")
        if kind not in FAULT_KINDS:
            raise ControlError(400, f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if op != OP_ANY and not _applicable(kind, op):
            raise ControlError(400, f"fault {kind!r} cannot happen on {op!r}")
        if count is not None and count < 1:
            raise ControlError(400, "count must be at least 1 (or null for unlimited)")
        if kind == FAULT_LATENCY and latency <= 0:
            raise ControlError(400, "a latency fault needs latency > 0 seconds")
        with self._lock:
            self._rules.append(
                FaultRule(
                    op=op,
                    kind=kind,
                    remaining=count,
                    mailbox=_norm_email(mailbox) if mailbox else None,
                    latency=float(latency),
                    retry_at=retry_at or DEFAULT_RETRY_AT,
                )
            )

    def set_random_faults(
        self,
        probability: float,
        kinds: Sequence[str],
        *,
        op: str = "send",
        mailbox: str | None = None,
        latency: float = 1.0,
        retry_at: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Give each matching request ``probability`` of one fault drawn from ``kinds``."""
        if not 0.0 <= probability <= 1.0:
            raise ControlError(400, "probability must be between 0 and 1")
        if op not in OPERATIONS:
            raise ControlError(400, f"unknown operation {op!r}")
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad or not kinds:
            raise ControlError(400, f"bad fault kinds {bad or kinds!r}")
        with self._lock:
            if probability == 0.0:
                self._random = None
                return
            self._random = RandomFaults(
                probability=probability,
                kinds=tuple(kinds),
                op=op,
                mailbox=_norm_email(mailbox) if mailbox else None,
                latency=float(latency),
                retry_at=retry_at or DEFAULT_RETRY_AT,
                rng=random.Random(seed),
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random = None

    def fault_log(self) -> list[AppliedFault]:
        with self._lock:
            return list(self._fault_log)

    def take_faults(self, op: str, mailbox: str | None) -> FaultDecision:
        """Pick (and use up) the faults that hit one request of ``op`` on ``mailbox``."""
        with self._lock:
            latency_rule: FaultRule | None = None
            fault_rule: FaultRule | None = None
            for rule in self._rules:
                if not rule.matches(op, mailbox):
                    continue
                if rule.kind == FAULT_LATENCY:
                    latency_rule = latency_rule or rule
                else:
                    fault_rule = fault_rule or rule
            latency = 0.0
            kind: str | None = None
            retry_at = DEFAULT_RETRY_AT
            now = self._clock()
            for rule in [r for r in (latency_rule, fault_rule) if r is not None]:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                self._fault_log.append(AppliedFault(op=op, kind=rule.kind, mailbox=mailbox, at=now))
                if rule.kind == FAULT_LATENCY:
                    latency = rule.latency
                else:
                    kind, retry_at = rule.kind, rule.retry_at
            chance = self._random
            if (
                kind is None
                and chance is not None
                and chance.op in (OP_ANY, op)
                and (chance.mailbox is None or chance.mailbox == mailbox)
            ):
                candidates = [k for k in chance.kinds if _applicable(k, op)]
                if candidates and chance.rng.random() < chance.probability:
                    drawn = chance.rng.choice(candidates)
                    self._fault_log.append(AppliedFault(op=op, kind=drawn, mailbox=mailbox, at=now))
                    if drawn == FAULT_LATENCY:
                        latency += chance.latency
                    else:
                        kind, retry_at = drawn, chance.retry_at
            return FaultDecision(latency=latency, kind=kind, retry_at=retry_at)

    # ---------------------------------------------------------------- mailbox internals

    def _new_id(self) -> str:
        self._next_id += 1 + self._history_rng.randint(0, 15)
        return format(self._next_id, "x")

    def _store(
        self,
        box: Mailbox,
        raw: bytes,
        thread_id: str | None,
        label_ids: Sequence[str],
        direction: str,
    ) -> StoredMessage:
        parsed = mime.parse(raw)
        headers = mime.header_list(parsed)
        text, html_body = mime.bodies(parsed)
        now = self._clock()
        gmail_id = self._new_id()
        box.history_id += 1 + self._history_rng.randint(0, 5)
        message = StoredMessage(
            gmail_id=gmail_id,
            thread_id=thread_id or gmail_id,
            label_ids=list(label_ids),
            raw=raw,
            header_list=headers,
            text_body=text,
            html_body=html_body,
            internal_date_ms=int(now * 1000),
            received_at=now,
            history_id=box.history_id,
            direction=direction,
        )
        box.messages[gmail_id] = message
        box.threads.setdefault(message.thread_id, []).append(gmail_id)
        box.history.append(
            HistoryRecord(
                history_id=box.history_id,
                gmail_id=gmail_id,
                thread_id=message.thread_id,
                label_ids=tuple(message.label_ids),
            )
        )
        return message

    def _find_by_message_id(self, box: Mailbox, message_id: str) -> StoredMessage | None:
        wanted = message_id.strip().strip("<>").strip().lower()
        for message in box.messages.values():
            mid = message.message_id
            if mid is not None and mid.strip().strip("<>").strip().lower() == wanted:
                return message
        return None

    # ---------------------------------------------------------------- Gmail API

    def profile(self, email_address: str) -> dict[str, Any]:
        with self._lock:
            box = self._mailbox(email_address)
            return {
                "emailAddress": box.email,
                "messagesTotal": len(box.messages),
                "threadsTotal": len(box.threads),
                "historyId": str(box.history_id),
            }

    def send(self, email_address: str, body: Any) -> dict[str, Any]:
        """``users.messages.send`` with a JSON body ``{"raw": ..., "threadId": ...}``."""
        with self._lock:
            box = self._mailbox(email_address)
            account = self._accounts[box.email]
            if not isinstance(body, dict) or not body.get("raw"):
                raise errors.invalid_argument(
                    "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
                )
            try:
                raw = mime.b64url_decode(str(body["raw"]))
            except ValueError as exc:
                raise errors.invalid_argument(
                    "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
                    reason="invalid",
                ) from exc
            headers = mime.header_list(mime.parse(raw))
            if not mime.addresses(headers, "To", "Cc", "Bcc"):
                raise errors.invalid_argument("Recipient address required")
            thread_id = body.get("threadId") or None
            if thread_id is not None and thread_id not in box.threads:
                raise errors.not_found()
            if box.replace_message_ids or mime.get_header(headers, "Message-ID") is None:
                raw = mime.replace_header(raw, "Message-ID", mime.new_gmail_message_id())
            if mime.get_header(headers, "From") is None:
                sender = email.utils.formataddr((account.display_name, account.email))
                raw = mime.replace_header(raw, "From", sender)
            if mime.get_header(headers, "Date") is None:
                now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
                raw = mime.replace_header(raw, "Date", email.utils.format_datetime(now))
            message = self._store(box, raw, thread_id, ["SENT"], "sent")
            box.send_times.append(message.received_at)
            return {"id": message.gmail_id, "threadId": message.thread_id, "labelIds": ["SENT"]}

    def _matching(self, box: Mailbox, q: str | None, label_ids: Sequence[str]) -> list[StoredMessage]:
        try:
            predicate = compile_query(q, now=self._clock())
        except QueryError as exc:
            raise errors.invalid_argument(f"Invalid query: {exc}") from exc
        wanted = set(label_ids)
        found = [m for m in box.messages.values() if wanted <= set(m.label_ids) and predicate(m.search_view)]
        found.sort(key=lambda m: (m.internal_date_ms, int(m.gmail_id, 16)), reverse=True)
        return found

    def list_messages(self, email_address: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        with self._lock:
            box = self._mailbox(email_address)
            found = self._matching(box, _first(params, "q"), params.get("labelIds", []))
            chunk, next_token = _page(found, _first(params, "pageToken"), _first(params, "maxResults"))
            answer: dict[str, Any] = {}
            if chunk:
                answer["messages"] = [{"id": m.gmail_id, "threadId": m.thread_id} for m in chunk]
            if next_token:
                answer["nextPageToken"] = next_token
            answer["resultSizeEstimate"] = len(found)
            return answer

    def list_threads(self, email_address: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        with self._lock:
            box = self._mailbox(email_address)
            found = self._matching(box, _first(params, "q"), params.get("labelIds", []))
            thread_ids = list(dict.fromkeys(m.thread_id for m in found))
            chunk, next_token = _page(thread_ids, _first(params, "pageToken"), _first(params, "maxResults"))
            answer: dict[str, Any] = {}
            if chunk:
                answer["threads"] = []
                for tid in chunk:
                    last = box.messages[box.threads[tid][-1]]
                    history = max(box.messages[mid].history_id for mid in box.threads[tid])
                    answer["threads"].append({"id": tid, "snippet": last.snippet(), "historyId": str(history)})
            if next_token:
                answer["nextPageToken"] = next_token
            answer["resultSizeEstimate"] = len(thread_ids)
            return answer

    def _resource(self, message: StoredMessage, fmt: str, metadata_headers: Sequence[str]) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "id": message.gmail_id,
            "threadId": message.thread_id,
            "labelIds": list(message.label_ids),
            "snippet": message.snippet(),
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(message.internal_date_ms),
        }
        if fmt == "metadata":
            resource["payload"] = mime.metadata_payload(mime.parse(message.raw), list(metadata_headers))
        elif fmt == "full":
            resource["payload"] = mime.payload_tree(mime.parse(message.raw))
        elif fmt == "raw":
            resource["raw"] = mime.b64url_encode(message.raw)
        return resource

    def get_message(
        self, email_address: str, gmail_id: str, fmt: str, metadata_headers: Sequence[str]
    ) -> dict[str, Any]:
        if fmt not in ("minimal", "metadata", "full", "raw"):
            raise errors.invalid_argument(f"Invalid value for format: {fmt}")
        with self._lock:
            message = self._mailbox(email_address).messages.get(gmail_id)
            if message is None:
                raise errors.not_found()
            return self._resource(message, fmt, metadata_headers)

    def get_thread(
        self, email_address: str, thread_id: str, fmt: str, metadata_headers: Sequence[str]
    ) -> dict[str, Any]:
        if fmt not in ("minimal", "metadata", "full"):
            raise errors.invalid_argument(f"Invalid value for format: {fmt}")
        with self._lock:
            box = self._mailbox(email_address)
            ids = box.threads.get(thread_id)
            if ids is None:
                raise errors.not_found()
            messages = [box.messages[i] for i in ids]
            return {
                "id": thread_id,
                "historyId": str(max(m.history_id for m in messages)),
                "messages": [self._resource(m, fmt, metadata_headers) for m in messages],
            }

    def list_history(self, email_address: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        with self._lock:
            box = self._mailbox(email_address)
            start_text = _first(params, "startHistoryId")
            if not start_text:
                raise errors.invalid_argument("Missing required parameter: startHistoryId", "required")
            try:
                start = int(start_text)
            except ValueError as exc:
                raise errors.invalid_argument("Invalid startHistoryId") from exc
            if start < box.history_floor:
                raise errors.not_found()
            types = params.get("historyTypes")
            label = _first(params, "labelId")
            records = [r for r in box.history if r.history_id > start]
            if types and "messageAdded" not in types:
                records = []
            if label:
                records = [r for r in records if label in r.label_ids]
            chunk, next_token = _page(records, _first(params, "pageToken"), _first(params, "maxResults"))
            answer: dict[str, Any] = {}
            if chunk:
                answer["history"] = [
                    {
                        "id": str(r.history_id),
                        "messages": [{"id": r.gmail_id, "threadId": r.thread_id}],
                        "messagesAdded": [
                            {
                                "message": {
                                    "id": r.gmail_id,
                                    "threadId": r.thread_id,
                                    "labelIds": list(r.label_ids),
                                }
                            }
                        ],
                    }
                    for r in chunk
                ]
            if next_token:
                answer["nextPageToken"] = next_token
            answer["historyId"] = str(box.history_id)
            return answer

    # ---------------------------------------------------------------- control: mailbox

    def messages(self, email_address: str, *, direction: str | None = None) -> list[MailboxMessage]:
        with self._lock:
            box = self._mailbox(email_address)
            return [m.public() for m in box.messages.values() if direction is None or m.direction == direction]

    def send_times(self, email_address: str) -> list[float]:
        with self._lock:
            return list(self._mailbox(email_address).send_times)

    def deliver(
        self,
        email_address: str,
        raw: bytes,
        *,
        thread_id: str | None = None,
        label_ids: Sequence[str] | None = None,
    ) -> MailboxMessage:
        """Put an inbound message into a mailbox, threading it as Gmail would."""
        with self._lock:
            box = self._mailbox(email_address)
            try:
                headers = mime.header_list(mime.parse(raw))
            except Exception as exc:
                raise ControlError(400, f"not an RFC 822 message: {exc}") from exc
            if thread_id is not None and thread_id not in box.threads:
                raise ControlError(404, f"no thread {thread_id!r} in {box.email}")
            if thread_id is None:
                refs: list[str] = []
                for name in ("In-Reply-To", "References"):
                    value = mime.get_header(headers, name)
                    if value:
                        refs.extend(reversed(value.replace(",", " ").split()))
                for ref in refs:
                    parent = self._find_by_message_id(box, ref)
                    if parent is not None:
                        thread_id = parent.thread_id
                        break
            if mime.get_header(headers, "Message-ID") is None:
                raw = mime.replace_header(raw, "Message-ID", mime.new_gmail_message_id())
            labels = list(label_ids) if label_ids is not None else ["INBOX", "UNREAD"]
            return self._store(box, raw, thread_id, labels, "inbound").public()

    def expire_history(self, email_address: str) -> None:
        """Drop all history up to now: older startHistoryIds then answer 404."""
        with self._lock:
            box = self._mailbox(email_address)
            box.history_floor = box.history_id
            box.history.clear()


def _error_page(status: int, error: str, description: str) -> AuthorizeOutcome:
    import html

    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Error</title></head><body>"
        f"<h1>Access blocked</h1><p>Error {status}: {html.escape(error)}</p>"
        f"<p>{html.escape(description)}</p></body></html>"
    )
    return AuthorizeOutcome(status, html=page)
