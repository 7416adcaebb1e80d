"""The project's only door to Google: OAuth helpers and a Gmail API client.

Nothing else in the project imports Google's libraries. Everything here works the
same against Google and against the local sandbox (``google_sandbox``): only
the URLs in :class:`GoogleConfig` differ.

Safety rules this module enforces:

* ``messages.send`` is sent exactly once. httplib2 silently re-sends a request
  (POST included) when the server closes the connection without answering, and
  does so on the first failure even with ``httplib2.RETRIES = 1``. Our
  :class:`_SingleAttemptHttp` sends every non-idempotent request once, on a fresh
  connection, and a lost answer becomes :class:`OutcomeUnknown`.
* No ``num_retries``, media uploads or batch requests (the latter two ignore the
  configured endpoint).
* Tokens never appear in logs or error messages; secrets are kept out of ``repr``.

A :class:`GmailClient` wraps one ``httplib2.Http``: use one per thread / task.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import http.client
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from types import TracebackType
from typing import Any, Literal, Self

import google.auth.exceptions
import google_auth_httplib2
import httplib2
import requests
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from oauthlib.oauth2.rfc6749.errors import OAuth2Error  # type: ignore[import-untyped, unused-ignore]

logger = logging.getLogger(__name__)

QUEUE_ID_HEADER = "X-Oree-Queue-Id"
"""Header carrying the send-queue row's UUID; :meth:`GmailClient.find_sent_by_header` looks for it."""

SCOPE_SEND = "https://www.googleapis.com/auth/gmail.send"
SCOPE_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_SCOPES: tuple[str, ...] = (SCOPE_SEND, SCOPE_READONLY)
"""What a connected mailbox must grant: send mail, and read it (replies, bounces, history)."""

GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
GMAIL_API_ENDPOINT = "https://gmail.googleapis.com/"

MessageFormat = Literal["minimal", "metadata", "full", "raw"]

_OP_SEND = "send"
_RETRY_AFTER_RE = re.compile(r"Retry after (\S+)", re.IGNORECASE)


# =========================================================================== configuration


@dataclass(frozen=True)
class GoogleConfig:
    """Where Google (or the sandbox) is, and who we are to it."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    auth_uri: str = GOOGLE_AUTH_URI
    token_uri: str = GOOGLE_TOKEN_URI
    revoke_uri: str = GOOGLE_REVOKE_URI
    gmail_endpoint: str = GMAIL_API_ENDPOINT
    timeout: float = 30.0

    @classmethod
    def from_settings(cls) -> GoogleConfig:
        """Read GOOGLE_* / GMAIL_* Django settings (Django is imported only here)."""
        from django.conf import settings

        return cls(
            client_id=settings.GOOGLE_CLIENT_ID,
            client_secret=settings.GOOGLE_CLIENT_SECRET,
            redirect_uri=settings.GOOGLE_REDIRECT_URI,
            auth_uri=getattr(settings, "GOOGLE_AUTH_URI", GOOGLE_AUTH_URI),
            token_uri=getattr(settings, "GOOGLE_TOKEN_URI", GOOGLE_TOKEN_URI),
            revoke_uri=getattr(settings, "GOOGLE_REVOKE_URI", GOOGLE_REVOKE_URI),
            gmail_endpoint=getattr(settings, "GMAIL_API_ENDPOINT", GMAIL_API_ENDPOINT),
            timeout=float(getattr(settings, "GMAIL_HTTP_TIMEOUT", 30)),
        )


@dataclass(frozen=True)
class MailboxCredentials:
    """One mailbox's OAuth tokens, as the caller stores them (encrypted)."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: dt.datetime | None  # timezone-aware
    scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.expiry is not None and self.expiry.tzinfo is None:
            raise ValueError("MailboxCredentials.expiry must be timezone-aware")


# =========================================================================== errors


class GmailError(Exception):
    """Base of every error this module raises. Messages never contain tokens."""

    def __init__(self, message: str, *, status: int | None = None, google_reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.google_reason = google_reason


class RateLimited(GmailError):
    """Too many requests for this mailbox; try again at ``retry_at`` (when Google said)."""

    def __init__(self, message: str, *, retry_at: dt.datetime | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_at = retry_at


class DailyLimitExceeded(GmailError):
    """The mailbox (or project) used up its daily quota."""


class AuthorizationRevoked(GmailError):
    """The grant is gone (``invalid_grant``, or 401 even after a refresh): reconnect the mailbox."""


class InsufficientPermissions(GmailError):
    """The token lacks a scope this call needs."""


class InvalidMessage(GmailError):
    """Google refused the request as malformed (400); ``reason`` is Google's explanation."""

    def __init__(self, reason: str, **kwargs: Any) -> None:
        super().__init__(f"Gmail rejected the request: {reason}", **kwargs)
        self.reason = reason


class NotFound(GmailError):
    """404: unknown message or thread, or a history cursor older than Gmail keeps."""


class GmailUnavailable(GmailError):
    """Gmail did not give a usable answer (5xx, timeout, connection dropped or refused).

    ``may_have_reached_google`` says whether the request may have been acted on.
    """

    def __init__(self, message: str, *, may_have_reached_google: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.may_have_reached_google = may_have_reached_google


class OutcomeUnknown(GmailUnavailable):
    """A send that may or may not have gone out: reconcile (find_sent_by_header) before retrying."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, may_have_reached_google=True, **kwargs)


class AuthorizationFailed(GmailError):
    """The OAuth consent or code exchange failed; ``error`` is the OAuth error code."""

    def __init__(self, error: str, message: str | None = None) -> None:
        super().__init__(message or f"Google authorisation failed: {error}", google_reason=error)
        self.error = error


class ScopesNotGranted(AuthorizationFailed):
    """The user consented but left out scopes we need."""

    def __init__(self, missing: Sequence[str], granted: Sequence[str]) -> None:
        super().__init__("insufficient_scopes", f"Google did not grant: {', '.join(sorted(missing))}")
        self.missing = tuple(missing)
        self.granted = tuple(granted)


# =========================================================================== results


@dataclass(frozen=True)
class SentMessage:
    gmail_id: str
    thread_id: str
    label_ids: tuple[str, ...]
    rfc822_message_id: str | None  # as Gmail stored it; None if it could not be read back


@dataclass(frozen=True)
class Profile:
    email_address: str
    messages_total: int
    threads_total: int
    history_id: str


@dataclass(frozen=True)
class MessagePart:
    """One node of a ``format=full`` payload tree; ``body`` is decoded bytes."""

    part_id: str
    mime_type: str
    filename: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    parts: tuple[MessagePart, ...] = ()

    def walk(self) -> Iterator[MessagePart]:
        yield self
        for part in self.parts:
            yield from part.walk()


@dataclass(frozen=True)
class GmailMessage:
    id: str
    thread_id: str
    label_ids: tuple[str, ...]
    snippet: str
    internal_date: dt.datetime | None
    history_id: str | None
    size_estimate: int | None
    headers: tuple[tuple[str, str], ...]  # all headers for full/raw, the asked ones for metadata
    raw: bytes | None = None  # format=raw
    payload: MessagePart | None = None  # format=full

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def rfc822_message_id(self) -> str | None:
        return self.header("Message-ID")

    def _body(self, mime_type: str) -> str | None:
        if self.payload is not None:
            for part in self.payload.walk():
                if part.mime_type == mime_type and not part.filename:
                    return part.body.decode(_charset(part.headers), errors="replace")
        if self.raw is not None:
            parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
            for node in parsed.walk():
                if node.get_content_type() == mime_type and node.get_content_disposition() != "attachment":
                    payload = node.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        return payload.decode(node.get_content_charset() or "utf-8", errors="replace")
        return None

    @property
    def text_body(self) -> str | None:
        return self._body("text/plain")

    @property
    def html_body(self) -> str | None:
        return self._body("text/html")


@dataclass(frozen=True)
class GmailThread:
    id: str
    history_id: str | None
    messages: tuple[GmailMessage, ...]


@dataclass(frozen=True)
class ThreadSummary:
    id: str
    snippet: str
    history_id: str | None


@dataclass(frozen=True)
class MessageRef:
    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryRecord:
    id: str
    messages_added: tuple[MessageRef, ...]


@dataclass(frozen=True)
class HistoryPage:
    records: tuple[HistoryRecord, ...]
    next_page_token: str | None
    history_id: str  # the mailbox's current historyId: the next cursor once all pages are read


# =========================================================================== transport


class _NoResponse(Exception):
    """A non-idempotent request got no HTTP answer. ``sent``: it may have reached the server."""

    def __init__(self, path: str, sent: bool, cause: BaseException) -> None:
        super().__init__(f"no response to POST {path} ({type(cause).__name__})")
        self.path = path
        self.sent = sent


class _SingleAttemptHttp(httplib2.Http):  # type: ignore[misc]
    """``httplib2.Http`` that never re-sends a non-idempotent request.

    httplib2's ``_conn_request`` retries when the connection drops before an answer
    (``RETRIES``), and unconditionally once on the first ``BadStatusLine`` /
    ``RemoteDisconnected`` as a presumed stale keep-alive connection. For a POST
    that may be a second email. Here POSTs go once, on a new connection (so a
    stale pooled socket is never the reason a POST fails); safe methods keep
    httplib2's behaviour.
    """

    _SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def _conn_request(
        self, conn: Any, request_uri: str, method: str, body: Any, headers: dict[str, str]
    ) -> tuple[httplib2.Response, bytes]:
        if method in self._SAFE_METHODS:
            result: tuple[httplib2.Response, bytes] = super()._conn_request(conn, request_uri, method, body, headers)
            return result
        where = urllib.parse.urlsplit(request_uri).path
        # Our reader below does not decompress; ask for an identity-encoded answer.
        headers = {**headers, "accept-encoding": "identity"}
        conn.close()
        try:
            conn.connect()
        except (OSError, httplib2.HttpLib2Error) as exc:
            conn.close()
            raise _NoResponse(where, sent=False, cause=exc) from exc
        try:
            conn.request(method, request_uri, body, headers)
            answer = conn.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NoResponse(where, sent=True, cause=exc) from exc
        return httplib2.Response(answer), content


# =========================================================================== error mapping


def _parse_retry_at(message: str, retry_after_header: str | None) -> dt.datetime | None:
    match = _RETRY_AFTER_RE.search(message or "")
    if match:
        try:
            return dt.datetime.fromisoformat(match.group(1)).astimezone(dt.UTC)  # 3.11+ reads "Z"
        except ValueError:
            pass
    if retry_after_header:
        value = retry_after_header.strip()
        if value.isdigit():
            return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(value))
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(value).astimezone(dt.UTC)
    return None


def _from_http_error(exc: HttpError, op: str) -> GmailError:
    status = int(exc.resp.status)
    message = str(getattr(exc.resp, "reason", "") or f"HTTP {status}")
    reasons: list[str] = []
    try:
        error = json.loads(exc.content)["error"]
        message = str(error.get("message") or message)
        reasons = [str(e.get("reason")) for e in error.get("errors", []) if isinstance(e, dict)]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    reason = reasons[0] if reasons else None
    kwargs: dict[str, Any] = {"status": status, "google_reason": reason}
    if status == 429 or reason in ("rateLimitExceeded", "userRateLimitExceeded"):
        retry_at = _parse_retry_at(message, exc.resp.get("retry-after"))
        return RateLimited(f"Gmail rate limit: {message}", retry_at=retry_at, **kwargs)
    if reason in ("dailyLimitExceeded", "quotaExceeded"):
        return DailyLimitExceeded(f"Gmail daily limit: {message}", **kwargs)
    if status == 401:
        return AuthorizationRevoked("Gmail refused the credentials even after a token refresh", **kwargs)
    if status == 403 and reason == "insufficientPermissions":
        return InsufficientPermissions(message, **kwargs)
    if status == 400:
        return InvalidMessage(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 503:
        return GmailUnavailable(f"Gmail unavailable: {message}", may_have_reached_google=False, **kwargs)
    if status >= 500:
        if op == _OP_SEND:
            return OutcomeUnknown(f"Gmail failed ({status}) on send; it may have been sent", **kwargs)
        return GmailUnavailable(f"Gmail error {status}: {message}", may_have_reached_google=True, **kwargs)
    return GmailError(f"Gmail error {status}: {message}", **kwargs)


def _from_refresh_error(exc: google.auth.exceptions.RefreshError) -> GmailError:
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    error = str(data.get("error") or "")
    if error == "invalid_grant":
        return AuthorizationRevoked("Google revoked or expired the refresh token", google_reason=error)
    if getattr(exc, "retryable", False):
        return GmailUnavailable(
            "Google's token endpoint is unavailable", may_have_reached_google=False, google_reason=error or None
        )
    if error in ("invalid_client", "unauthorized_client"):
        return GmailError(f"Google rejected our OAuth client ({error})", google_reason=error)
    if not error:  # e.g. no refresh token stored: the mailbox must be reconnected
        return AuthorizationRevoked("the access token cannot be refreshed")
    return GmailError(f"token refresh failed ({error})", google_reason=error)


def _transport_error(exc: BaseException, op: str, token_uri: str) -> GmailError:
    kind = type(exc).__name__
    if isinstance(exc, _NoResponse):
        if exc.path == urllib.parse.urlsplit(token_uri).path:  # the refresh, not the Gmail call
            return GmailUnavailable(f"no answer from the token endpoint ({kind})", may_have_reached_google=False)
        if op == _OP_SEND and exc.sent:
            return OutcomeUnknown(f"no answer to messages.send ({exc}); it may have been sent")
        return GmailUnavailable(f"no answer from Gmail ({exc})", may_have_reached_google=exc.sent)
    refused = isinstance(exc, (ConnectionRefusedError, httplib2.ServerNotFoundError))
    return GmailUnavailable(f"Gmail unreachable ({kind})", may_have_reached_google=not refused)


# =========================================================================== conversions


def _aware(expiry: dt.datetime | None) -> dt.datetime | None:
    # google-auth keeps expiry as naive UTC.
    return expiry.replace(tzinfo=dt.UTC) if expiry is not None else None


def _naive_utc(expiry: dt.datetime | None) -> dt.datetime | None:
    return expiry.astimezone(dt.UTC).replace(tzinfo=None) if expiry is not None else None


def _b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _charset(headers: Sequence[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "content-type":
            msg = Message()
            msg["Content-Type"] = value
            return msg.get_content_charset() or "utf-8"
    return "utf-8"


def _headers(payload: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    if not payload:
        return ()
    return tuple((str(h.get("name", "")), str(h.get("value", ""))) for h in payload.get("headers", []))


def _part(node: Mapping[str, Any]) -> MessagePart:
    body = node.get("body") or {}
    data = body.get("data")
    return MessagePart(
        part_id=str(node.get("partId", "")),
        mime_type=str(node.get("mimeType", "")),
        filename=str(node.get("filename", "")),
        headers=_headers(node),
        body=_b64url_decode(data) if data else b"",
        parts=tuple(_part(child) for child in node.get("parts", [])),
    )


def _message(resource: Mapping[str, Any]) -> GmailMessage:
    raw = _b64url_decode(resource["raw"]) if resource.get("raw") else None
    payload = resource.get("payload")
    headers = _headers(payload)
    if raw is not None and not headers:
        parsed = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        headers = tuple((k, " ".join(str(v).split())) for k, v in parsed.items())
    internal = resource.get("internalDate")
    return GmailMessage(
        id=str(resource["id"]),
        thread_id=str(resource.get("threadId", "")),
        label_ids=tuple(resource.get("labelIds", [])),
        snippet=str(resource.get("snippet", "")),
        internal_date=dt.datetime.fromtimestamp(int(internal) / 1000, dt.UTC) if internal else None,
        history_id=str(resource["historyId"]) if resource.get("historyId") else None,
        size_estimate=int(resource["sizeEstimate"]) if resource.get("sizeEstimate") is not None else None,
        headers=headers,
        raw=raw,
        payload=_part(payload) if payload and "body" in payload else None,  # only format=full has bodies
    )


def _query_value(value: str) -> str:
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


# =========================================================================== client


class GmailClient:
    """Gmail operations for one mailbox.

    ``on_refresh`` is called with the new :class:`MailboxCredentials` whenever an
    operation refreshed the access token (even if the operation then failed). If it
    raises, the error is logged and swallowed: the operation's own outcome (e.g. a
    send that went out) matters more, and an unsaved token only costs a refresh.
    """

    def __init__(
        self,
        config: GoogleConfig,
        credentials: MailboxCredentials,
        on_refresh: Callable[[MailboxCredentials], None] | None = None,
    ) -> None:
        self._config = config
        self._on_refresh = on_refresh
        self._scopes = tuple(credentials.scopes)
        # Built directly: Credentials.from_authorized_user_info would reset token_uri to Google's.
        self._creds = Credentials(  # type: ignore[no-untyped-call]
            token=credentials.access_token,
            refresh_token=credentials.refresh_token,
            token_uri=config.token_uri,
            client_id=config.client_id,
            client_secret=config.client_secret,
            scopes=list(credentials.scopes) or None,
            expiry=_naive_utc(credentials.expiry),
        )
        self._known_token = credentials.access_token
        self._http = google_auth_httplib2.AuthorizedHttp(self._creds, http=_SingleAttemptHttp(timeout=config.timeout))
        self._service = build(
            "gmail",
            "v1",
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": config.gmail_endpoint},
            http=self._http,
        )
        self._users_resource: Any = None
        self._messages_resource: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def credentials(self) -> MailboxCredentials:
        """The current tokens (after any refresh)."""
        return MailboxCredentials(
            access_token=self._creds.token,
            refresh_token=self._creds.refresh_token,
            expiry=_aware(self._creds.expiry),
            scopes=tuple(self._creds.scopes or self._scopes),
        )

    # ------------------------------------------------------------------ plumbing

    def _users(self) -> Any:
        # Each `users()` / `messages()` call builds a Resource from the discovery document (about a
        # millisecond of CPU each): build them once per client. They hold no per-request state.
        if self._users_resource is None:
            self._users_resource = self._service.users()
        return self._users_resource

    def _messages(self) -> Any:
        if self._messages_resource is None:
            self._messages_resource = self._users().messages()
        return self._messages_resource

    def _execute(self, request: Any, op: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = request.execute()  # never num_retries: a retried send is a duplicate
            return result
        except HttpError as exc:
            raise _from_http_error(exc, op) from exc
        except google.auth.exceptions.RefreshError as exc:
            raise _from_refresh_error(exc) from exc
        except google.auth.exceptions.TransportError as exc:
            raise GmailUnavailable("could not reach Google's token endpoint", may_have_reached_google=False) from exc
        except (_NoResponse, OSError, http.client.HTTPException, httplib2.HttpLib2Error) as exc:
            raise _transport_error(exc, op, self._config.token_uri) from exc
        finally:
            self._report_refresh()

    def _report_refresh(self) -> None:
        token = self._creds.token
        if not token or token == self._known_token:
            return
        self._known_token = token
        if self._on_refresh is None:
            return
        try:
            self._on_refresh(self.credentials)
        except Exception:
            logger.exception("on_refresh callback failed; the refreshed access token was not stored")

    # ------------------------------------------------------------------ operations

    def get_profile(self) -> Profile:
        data = self._execute(self._users().getProfile(userId="me"), "profile")
        return Profile(
            email_address=str(data["emailAddress"]),
            messages_total=int(data.get("messagesTotal", 0)),
            threads_total=int(data.get("threadsTotal", 0)),
            history_id=str(data["historyId"]),
        )

    def send_raw(self, raw: bytes, thread_id: str | None = None) -> SentMessage:
        """Send an RFC 822 message exactly once, then read back the Message-ID Gmail stored.

        Raises :class:`OutcomeUnknown` when Gmail may have sent it without telling us.
        If only the read-back fails, the send still succeeded: ``rfc822_message_id`` is None.
        """
        body: dict[str, str] = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
        if thread_id:
            body["threadId"] = thread_id
        data = self._execute(self._messages().send(userId="me", body=body), _OP_SEND)
        gmail_id = str(data["id"])
        rfc822_id: str | None
        try:
            rfc822_id = self.get_message(gmail_id, format="metadata", metadata_headers=["Message-ID"]).rfc822_message_id
        except GmailError as exc:
            logger.warning("sent Gmail message %s but could not read its Message-ID back (%s)", gmail_id, exc)
            rfc822_id = None
        return SentMessage(
            gmail_id=gmail_id,
            thread_id=str(data.get("threadId", gmail_id)),
            label_ids=tuple(data.get("labelIds", [])),
            rfc822_message_id=rfc822_id,
        )

    def get_message(
        self,
        gmail_id: str,
        format: MessageFormat = "metadata",
        metadata_headers: Sequence[str] | None = None,
    ) -> GmailMessage:
        kwargs: dict[str, Any] = {"userId": "me", "id": gmail_id, "format": format}
        if format == "metadata" and metadata_headers:
            kwargs["metadataHeaders"] = list(metadata_headers)
        return _message(self._execute(self._messages().get(**kwargs), "get"))

    def get_thread(
        self,
        thread_id: str,
        format: Literal["minimal", "metadata", "full"] = "metadata",
        metadata_headers: Sequence[str] | None = None,
    ) -> GmailThread:
        kwargs: dict[str, Any] = {"userId": "me", "id": thread_id, "format": format}
        if format == "metadata" and metadata_headers:
            kwargs["metadataHeaders"] = list(metadata_headers)
        data = self._execute(self._users().threads().get(**kwargs), "thread")
        return GmailThread(
            id=str(data["id"]),
            history_id=str(data["historyId"]) if data.get("historyId") else None,
            messages=tuple(_message(m) for m in data.get("messages", [])),
        )

    def _list_message_refs(self, q: str, limit: int) -> Iterator[MessageRef]:
        page_token: str | None = None
        seen = 0
        while seen < limit:
            kwargs: dict[str, Any] = {"userId": "me", "q": q, "maxResults": min(100, limit - seen)}
            if page_token:
                kwargs["pageToken"] = page_token
            data = self._execute(self._messages().list(**kwargs), "list")
            for item in data.get("messages", []):
                seen += 1
                yield MessageRef(id=str(item["id"]), thread_id=str(item.get("threadId", "")))
            page_token = data.get("nextPageToken")
            if not page_token:
                return

    def _as_sent(self, message: GmailMessage) -> SentMessage:
        return SentMessage(
            gmail_id=message.id,
            thread_id=message.thread_id,
            label_ids=message.label_ids,
            rfc822_message_id=message.rfc822_message_id,
        )

    def find_sent_by_message_id(self, rfc822_id: str) -> SentMessage | None:
        """The sent message whose Message-ID is ``rfc822_id`` (angle brackets optional)."""
        bare = rfc822_id.strip().strip("<>").strip()
        if not bare:
            raise ValueError("empty Message-ID")
        for ref in self._list_message_refs(f"rfc822msgid:{bare}", limit=10):
            message = self.get_message(ref.id, format="metadata", metadata_headers=["Message-ID"])
            if "SENT" in message.label_ids:
                return self._as_sent(message)
        return None

    def find_sent_by_header(
        self,
        recipient: str,
        header_name: str,
        header_value: str,
        newer_than_days: int = 7,
        max_candidates: int = 500,
    ) -> SentMessage | None:
        """A sent message to ``recipient`` carrying ``header_name: header_value``.

        Gmail cannot search arbitrary headers, so this lists ``in:sent to:<recipient>
        newer_than:<N>d`` and checks each candidate's header with a metadata get.
        Used to learn whether a send that ended in :class:`OutcomeUnknown` went out.
        """
        wanted = header_value.strip()
        q = f"in:sent to:{_query_value(recipient)} newer_than:{int(newer_than_days)}d"
        for ref in self._list_message_refs(q, limit=max_candidates):
            message = self.get_message(ref.id, format="metadata", metadata_headers=[header_name, "Message-ID"])
            value = message.header(header_name)
            if value is not None and value.strip() == wanted:
                return self._as_sent(message)
        return None

    def list_history(
        self,
        start_history_id: str,
        page_token: str | None = None,
        *,
        history_types: Sequence[str] = ("messageAdded",),
        label_id: str | None = None,
        max_results: int = 100,
    ) -> HistoryPage:
        """One page of mailbox history after ``start_history_id``.

        Raises :class:`NotFound` when the cursor is older than Gmail keeps: resync with
        :meth:`get_profile` (new cursor) and :meth:`list_recent_inbox_threads`.
        """
        kwargs: dict[str, Any] = {
            "userId": "me",
            "startHistoryId": str(start_history_id),
            "maxResults": max_results,
        }
        if history_types:
            kwargs["historyTypes"] = list(history_types)
        if label_id:
            kwargs["labelId"] = label_id
        if page_token:
            kwargs["pageToken"] = page_token
        data = self._execute(self._users().history().list(**kwargs), "history")
        records = tuple(
            HistoryRecord(
                id=str(item["id"]),
                messages_added=tuple(
                    MessageRef(
                        id=str(added["message"]["id"]),
                        thread_id=str(added["message"].get("threadId", "")),
                        label_ids=tuple(added["message"].get("labelIds", [])),
                    )
                    for added in item.get("messagesAdded", [])
                ),
            )
            for item in data.get("history", [])
        )
        return HistoryPage(
            records=records,
            next_page_token=data.get("nextPageToken"),
            history_id=str(data["historyId"]),
        )

    def list_recent_inbox_threads(self, newer_than_days: int = 7, max_threads: int = 100) -> list[ThreadSummary]:
        """Inbox threads active in the last ``newer_than_days`` days, newest first."""
        found: list[ThreadSummary] = []
        page_token: str | None = None
        while len(found) < max_threads:
            kwargs: dict[str, Any] = {
                "userId": "me",
                "q": f"in:inbox newer_than:{int(newer_than_days)}d",
                "maxResults": min(100, max_threads - len(found)),
            }
            if page_token:
                kwargs["pageToken"] = page_token
            data = self._execute(self._users().threads().list(**kwargs), "list")
            for item in data.get("threads", []):
                found.append(
                    ThreadSummary(
                        id=str(item["id"]),
                        snippet=str(item.get("snippet", "")),
                        history_id=str(item["historyId"]) if item.get("historyId") else None,
                    )
                )
            page_token = data.get("nextPageToken")
            if not page_token:
                break
        return found[:max_threads]


# =========================================================================== OAuth

_OAUTHLIB_ENV_LOCK = threading.Lock()
_OAUTHLIB_ENV_KEYS = ("OAUTHLIB_INSECURE_TRANSPORT", "OAUTHLIB_RELAX_TOKEN_SCOPE")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _needs_insecure_transport(*urls: str) -> bool:
    """True when some URL is plain http on a loopback host (the sandbox); refuse other http."""
    insecure = False
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            continue
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            insecure = True
            continue
        raise ValueError(f"OAuth endpoints must be https (plain http only on a loopback host): {url}")
    return insecure


@contextlib.contextmanager
def _oauthlib_environment(config: GoogleConfig, *, relax_scope: bool) -> Iterator[None]:
    """Set oauthlib's process-wide switches for one call, and put them back.

    * OAUTHLIB_INSECURE_TRANSPORT only when the endpoints are http on loopback.
    * OAUTHLIB_RELAX_TOKEN_SCOPE for the code exchange: Google may grant fewer (or,
      with include_granted_scopes, more) scopes than asked; oauthlib would raise,
      and we compare granted scopes ourselves instead.
    The lock keeps concurrent OAuth calls in this process from undoing each other.
    """
    insecure = _needs_insecure_transport(config.auth_uri, config.token_uri)
    with _OAUTHLIB_ENV_LOCK:
        saved = {key: os.environ.get(key) for key in _OAUTHLIB_ENV_KEYS}
        try:
            if insecure:
                os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
            if relax_scope:
                os.environ["OAUTHLIB_RELAX_TOKEN_SCOPE"] = "1"
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _flow(config: GoogleConfig, scopes: Sequence[str], code_verifier: str | None = None) -> Flow:
    client_config = {
        "web": {
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "auth_uri": config.auth_uri,
            "token_uri": config.token_uri,
            "redirect_uris": [config.redirect_uri],
        }
    }
    return Flow.from_client_config(
        client_config,
        scopes=list(scopes),
        redirect_uri=config.redirect_uri,
        code_verifier=code_verifier,
        autogenerate_code_verifier=code_verifier is None,
    )


def start_authorization(
    config: GoogleConfig,
    state: str,
    scopes: Sequence[str] = GMAIL_SCOPES,
    login_hint: str | None = None,
) -> tuple[str, str]:
    """The consent URL to send the user to, and the PKCE verifier to keep for the exchange.

    Asks for offline access (a refresh token), forces the consent screen so Google
    issues a new refresh token even on reconnection, and includes earlier grants.
    """
    flow = _flow(config, scopes)
    extra: dict[str, str] = {}
    if login_hint:
        extra["login_hint"] = login_hint
    with _oauthlib_environment(config, relax_scope=False):
        url, _state = flow.authorization_url(
            state=state,
            access_type="offline",
            prompt="consent",
            include_granted_scopes="true",
            **extra,
        )
    verifier = flow.code_verifier
    assert isinstance(verifier, str) and verifier
    return str(url), verifier


def code_from_callback(params: Mapping[str, str], expected_state: str) -> str:
    """The authorisation code from the redirect's query, after checking ``state``.

    Raises :class:`AuthorizationFailed` (``access_denied`` when the user said no).
    """
    if not secrets.compare_digest((params.get("state") or "").encode(), expected_state.encode()):
        raise AuthorizationFailed("state_mismatch", "the OAuth state does not match this session")
    error = params.get("error")
    if error:
        raise AuthorizationFailed(error)
    code = params.get("code")
    if not code:
        raise AuthorizationFailed("missing_code", "Google's redirect carried no authorisation code")
    return code


def exchange_code(
    config: GoogleConfig,
    code: str,
    code_verifier: str,
    state: str | None = None,
    required_scopes: Sequence[str] = GMAIL_SCOPES,
) -> tuple[MailboxCredentials, tuple[str, ...]]:
    """Trade an authorisation code (and its PKCE verifier) for tokens.

    Returns the credentials and the scopes Google actually granted. Raises
    :class:`ScopesNotGranted` (after revoking the new grant) when a required scope is
    missing or no refresh token came back, :class:`AuthorizationFailed` when Google
    refuses the code, :class:`GmailUnavailable` when it cannot be reached.
    ``state`` is accepted for symmetry; check it with :func:`code_from_callback`.
    """
    del state  # verified by the caller against its session, before the exchange
    flow = _flow(config, required_scopes, code_verifier=code_verifier)
    try:
        with _oauthlib_environment(config, relax_scope=True):
            token = flow.fetch_token(code=code, code_verifier=code_verifier, timeout=config.timeout)
    except OAuth2Error as exc:
        raise AuthorizationFailed(str(exc.error or "oauth_error"), f"Google refused the code ({exc.error})") from exc
    except requests.RequestException as exc:
        raise GmailUnavailable(
            f"could not reach Google's token endpoint ({type(exc).__name__})", may_have_reached_google=True
        ) from exc
    scope_value = token.get("scope") or []
    granted = tuple(scope_value.split() if isinstance(scope_value, str) else scope_value)
    expires_at = token.get("expires_at")
    credentials = MailboxCredentials(
        access_token=str(token["access_token"]),
        refresh_token=token.get("refresh_token"),
        expiry=dt.datetime.fromtimestamp(float(expires_at), dt.UTC) if expires_at else None,
        scopes=granted,
    )
    missing = [s for s in required_scopes if s not in granted]
    if missing or not credentials.refresh_token:
        with contextlib.suppress(GmailError, ValueError):
            revoke_token(config, credentials.refresh_token or str(token["access_token"]))
        if missing:
            raise ScopesNotGranted(missing, granted)
        raise AuthorizationFailed("no_refresh_token", "Google issued no refresh token (offline access missing)")
    return credentials, granted


def revoke_token(config: GoogleConfig, token: str) -> bool:
    """Revoke a refresh (or access) token, and with it the whole grant.

    True when revoked now, False when Google says it was already invalid.
    """
    _needs_insecure_transport(config.revoke_uri)
    try:
        response = requests.post(
            config.revoke_uri,
            data={"token": token},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=config.timeout,
        )
    except requests.RequestException as exc:
        raise GmailUnavailable(
            f"could not reach Google's revoke endpoint ({type(exc).__name__})", may_have_reached_google=True
        ) from exc
    if response.status_code == 200:
        return True
    error = ""
    with contextlib.suppress(ValueError, AttributeError):
        error = str(response.json().get("error") or "")
    if response.status_code == 400 and error == "invalid_token":
        return False
    if response.status_code >= 500:
        raise GmailUnavailable(
            f"revoke failed with {response.status_code}", may_have_reached_google=True, status=response.status_code
        )
    raise GmailError(f"revoke failed with {response.status_code} ({error})", status=response.status_code)
