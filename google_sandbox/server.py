"""The sandbox's HTTP server: Google's OAuth and Gmail endpoints plus ``/_sandbox/`` control."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from . import errors
from .errors import ApiError, ControlError, OAuthError
from .models import (
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_ACCEPT_THEN_RESET,
    FAULT_AUTH_ERROR,
    FAULT_BACKEND_ERROR,
    FAULT_DAILY_LIMIT,
    FAULT_INVALID_GRANT,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_GET,
    OP_HISTORY,
    OP_LIST,
    OP_PROFILE,
    OP_SEND,
    OP_THREAD,
    OP_TOKEN_REFRESH,
    AppliedFault,
    MailboxMessage,
)
from .state import (
    METADATA_SCOPES,
    PROFILE_SCOPES,
    READ_SCOPES,
    SEND_SCOPES,
    Account,
    FaultDecision,
    OAuthClient,
    SandboxState,
)

logger = logging.getLogger(__name__)

AUTH_PATH = "/o/oauth2/auth"
TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"
CONTROL_PREFIX = "/_sandbox"
JSON_TYPE = "application/json; charset=UTF-8"
MAX_BODY = 50 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    host: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ControlError(400, "body is not JSON") from exc

    def form(self) -> dict[str, str]:
        """Form fields from the body, falling back to the query string."""
        merged: dict[str, str] = {k: v[0] for k, v in self.query.items() if v}
        if self.body:
            try:
                text = self.body.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            for key, values in urllib.parse.parse_qs(text, keep_blank_values=True).items():
                merged[key] = values[0]
        return merged


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    disconnect: str | None = None  # "reset" or "close": answer nothing

    @classmethod
    def json(cls, status: int, payload: Any) -> Reply:
        return cls(status, json.dumps(payload, indent=2).encode())


Route = tuple[str, re.Pattern[str], Callable[..., Reply]]


def _fault_error(decision: FaultDecision) -> ApiError | None:
    kind = decision.kind
    if kind == FAULT_RATE_LIMIT:
        return errors.rate_limited(decision.retry_at)
    if kind == FAULT_DAILY_LIMIT:
        return errors.daily_limit()
    if kind == FAULT_AUTH_ERROR:
        return errors.unauthenticated()
    if kind == FAULT_BACKEND_ERROR:
        return errors.backend_error()
    if kind == FAULT_UNAVAILABLE:
        return errors.unavailable()
    return None


def _token_fault_error(decision: FaultDecision) -> OAuthError | None:
    kind = decision.kind
    if kind == FAULT_INVALID_GRANT:
        return OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
    if kind == FAULT_AUTH_ERROR:
        return OAuthError(401, "invalid_client", "Unauthorized")
    if kind == FAULT_RATE_LIMIT:
        return OAuthError(429, "rate_limit_exceeded", "Rate limit exceeded")
    if kind == FAULT_BACKEND_ERROR:
        return OAuthError(500, "internal_failure", "Backend Error")
    if kind == FAULT_UNAVAILABLE:
        return OAuthError(503, "temporarily_unavailable", "The service is currently unavailable.")
    return None


def _disconnect_mode(decision: FaultDecision) -> str | None:
    if decision.kind == FAULT_ACCEPT_THEN_RESET:
        return "reset"
    if decision.kind == FAULT_ACCEPT_THEN_CLOSE:
        return "close"
    return None


class SandboxApp:
    """Routes requests to :class:`SandboxState`; knows nothing about sockets."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        user = r"(?P<user>[^/]+)"
        g = r"^/gmail/v1/users/" + user
        self.routes: list[Route] = [
            ("GET", re.compile(r"^/o/oauth2(?:/v2)?/auth$"), self.authorize),
            ("POST", re.compile(r"^/token$"), self.token),
            ("POST", re.compile(r"^/revoke$"), self.revoke),
            ("GET", re.compile(r"^/revoke$"), self.revoke),
            ("GET", re.compile(g + r"/profile$"), self.gmail_profile),
            ("POST", re.compile(g + r"/messages/send$"), self.gmail_send),
            ("GET", re.compile(g + r"/messages$"), self.gmail_list),
            ("GET", re.compile(g + r"/messages/(?P<id>[^/]+)$"), self.gmail_get),
            ("GET", re.compile(g + r"/threads$"), self.gmail_list_threads),
            ("GET", re.compile(g + r"/threads/(?P<id>[^/]+)$"), self.gmail_thread),
            ("GET", re.compile(g + r"/history$"), self.gmail_history),
        ]
        c = "^" + CONTROL_PREFIX
        box = c + r"/mailboxes/(?P<email>[^/]+)"
        self.control_routes: list[Route] = [
            ("GET", re.compile(c + r"/health$"), lambda r: Reply.json(200, {"ok": True})),
            ("POST", re.compile(c + r"/reset$"), self.c_reset),
            ("GET", re.compile(c + r"/accounts$"), lambda r: Reply.json(200, self.state.accounts())),
            ("POST", re.compile(c + r"/accounts$"), self.c_add_account),
            ("POST", re.compile(c + r"/default-account$"), self.c_default_account),
            ("POST", re.compile(c + r"/clients$"), self.c_register_client),
            ("POST", re.compile(c + r"/consent$"), self.c_consent),
            ("POST", re.compile(c + r"/token-lifetime$"), self.c_token_lifetime),
            ("POST", re.compile(c + r"/tokens$"), self.c_issue_tokens),
            ("GET", re.compile(box + r"/messages$"), self.c_messages),
            ("GET", re.compile(box + r"/send-times$"), self.c_send_times),
            ("POST", re.compile(box + r"/deliver$"), self.c_deliver),
            ("POST", re.compile(box + r"/expire-history$"), self.c_expire_history),
            ("POST", re.compile(box + r"/replace-message-ids$"), self.c_replace_ids),
            ("POST", re.compile(box + r"/revoke-grants$"), self.c_revoke_grants),
            ("POST", re.compile(c + r"/faults$"), self.c_add_fault),
            ("DELETE", re.compile(c + r"/faults$"), self.c_clear_faults),
            ("POST", re.compile(c + r"/faults/random$"), self.c_random_faults),
            ("GET", re.compile(c + r"/faults/log$"), self.c_fault_log),
        ]

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, request: Request) -> Reply:
        control = request.path.startswith(CONTROL_PREFIX + "/")
        routes = self.control_routes if control else self.routes
        allowed = []
        for method, pattern, handler in routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            try:
                return handler(request, **params)
            except ApiError as exc:
                return Reply(exc.code, exc.to_bytes(), headers=list(exc.headers))
            except OAuthError as exc:
                return Reply(exc.status, exc.to_bytes(), headers=[("Cache-Control", "no-store")])
            except ControlError as exc:
                return Reply.json(exc.status, {"error": exc.message})
        if request.path.startswith("/gmail/"):
            missing = ApiError(
                501,
                f"The Google sandbox does not implement {request.method} {request.path}.",
                "notImplemented",
                status="UNIMPLEMENTED",
            )
            return Reply(501, missing.to_bytes())
        if allowed:
            return Reply.json(405, {"error": f"method not allowed; use {', '.join(allowed)}"})
        return Reply.json(404, {"error": f"no such endpoint: {request.method} {request.path}"})

    # ---------------------------------------------------------------- OAuth

    def authorize(self, request: Request) -> Reply:
        self_url = f"http://{request.host}{request.path}"
        outcome = self.state.authorize(request.query, self_url)
        if outcome.location is not None:
            return Reply(outcome.status, headers=[("Location", outcome.location)], content_type="text/html")
        return Reply(outcome.status, (outcome.html or "").encode(), content_type="text/html; charset=utf-8")

    def token(self, request: Request) -> Reply:
        form = request.form()
        authorization = request.header("Authorization")
        grant_type = form.get("grant_type")
        headers = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        if grant_type == "authorization_code":
            return Reply(200, json.dumps(self.state.exchange_code(form, authorization)).encode(), headers=headers)
        if grant_type != "refresh_token":
            raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        grant = self.state.grant_for_refresh_token(form.get("refresh_token"))
        decision = self.state.take_faults(OP_TOKEN_REFRESH, grant.email if grant else None)
        if decision.latency:
            time.sleep(decision.latency)
        fault = _token_fault_error(decision)
        if fault is not None:
            raise fault
        answer = self.state.refresh(form, authorization)
        return Reply(200, json.dumps(answer).encode(), headers=headers, disconnect=_disconnect_mode(decision))

    def revoke(self, request: Request) -> Reply:
        self.state.revoke(request.form().get("token"))
        return Reply(200, b"{}")

    # ---------------------------------------------------------------- Gmail

    def _gmail(
        self,
        request: Request,
        user: str,
        op: str,
        scopes: frozenset[str],
        call: Callable[[str], dict[str, Any]],
    ) -> Reply:
        principal = self.state.authenticate(request.header("Authorization"))
        if user != "me" and user.strip().lower() != principal.email:
            raise ApiError(403, f"Delegation denied for {principal.email}", "forbidden")
        if not principal.scopes & scopes:
            raise errors.insufficient_scopes()
        decision = self.state.take_faults(op, principal.email)
        if decision.latency:
            time.sleep(decision.latency)
        fault = _fault_error(decision)
        if fault is not None:
            raise fault
        reply = Reply.json(200, call(principal.email))
        reply.disconnect = _disconnect_mode(decision)
        return reply

    def gmail_profile(self, request: Request, user: str) -> Reply:
        return self._gmail(request, user, OP_PROFILE, PROFILE_SCOPES, self.state.profile)

    def gmail_send(self, request: Request, user: str) -> Reply:
        if "uploadType" in request.query:
            raise errors.invalid_argument("The sandbox does not implement media uploads.")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            raise errors.invalid_argument("Invalid JSON payload received.", reason="parseError") from exc
        return self._gmail(request, user, OP_SEND, SEND_SCOPES, lambda e: self.state.send(e, body))

    def gmail_list(self, request: Request, user: str) -> Reply:
        scopes = READ_SCOPES if request.query.get("q") else METADATA_SCOPES
        return self._gmail(request, user, OP_LIST, scopes, lambda e: self.state.list_messages(e, request.query))

    def gmail_list_threads(self, request: Request, user: str) -> Reply:
        scopes = READ_SCOPES if request.query.get("q") else METADATA_SCOPES
        return self._gmail(request, user, OP_LIST, scopes, lambda e: self.state.list_threads(e, request.query))

    def _format(self, request: Request, default: str = "full") -> tuple[str, list[str], frozenset[str]]:
        fmt = (request.query.get("format") or [default])[0]
        scopes = METADATA_SCOPES if fmt in ("minimal", "metadata") else READ_SCOPES
        return fmt, request.query.get("metadataHeaders", []), scopes

    def gmail_get(self, request: Request, user: str, id: str) -> Reply:
        fmt, wanted, scopes = self._format(request)
        return self._gmail(request, user, OP_GET, scopes, lambda e: self.state.get_message(e, id, fmt, wanted))

    def gmail_thread(self, request: Request, user: str, id: str) -> Reply:
        fmt, wanted, scopes = self._format(request)
        return self._gmail(request, user, OP_THREAD, scopes, lambda e: self.state.get_thread(e, id, fmt, wanted))

    def gmail_history(self, request: Request, user: str) -> Reply:
        return self._gmail(
            request, user, OP_HISTORY, METADATA_SCOPES, lambda e: self.state.list_history(e, request.query)
        )

    # ---------------------------------------------------------------- control

    @staticmethod
    def _ok() -> Reply:
        return Reply.json(200, {"ok": True})

    def c_reset(self, request: Request) -> Reply:
        self.state.reset()
        return self._ok()

    def c_add_account(self, request: Request) -> Reply:
        data = request.json()
        self.state.add_account(str(data.get("email", "")), str(data.get("display_name") or ""))
        return self._ok()

    def c_default_account(self, request: Request) -> Reply:
        self.state.set_default_account(request.json().get("email"))
        return self._ok()

    def c_register_client(self, request: Request) -> Reply:
        data = request.json()
        self.state.register_client(
            str(data.get("client_id", "")), str(data.get("client_secret", "")), data.get("redirect_uris")
        )
        return self._ok()

    def c_consent(self, request: Request) -> Reply:
        data = request.json()
        self.state.set_consent(deny=bool(data.get("deny")), grant_only=data.get("grant_only"))
        return self._ok()

    def c_token_lifetime(self, request: Request) -> Reply:
        self.state.set_access_token_lifetime(float(request.json().get("seconds", 0)))
        return self._ok()

    def c_issue_tokens(self, request: Request) -> Reply:
        data = request.json()
        answer = self.state.issue_tokens(
            str(data.get("email", "")), list(data.get("scopes") or []), client_id=data.get("client_id")
        )
        return Reply.json(200, answer)

    def c_messages(self, request: Request, email: str) -> Reply:
        direction = request.query["direction"][0] if request.query.get("direction") else None
        found = self.state.messages(email, direction=direction)
        return Reply.json(200, [m.to_json() for m in found])

    def c_send_times(self, request: Request, email: str) -> Reply:
        return Reply.json(200, self.state.send_times(email))

    def c_deliver(self, request: Request, email: str) -> Reply:
        data = request.json()
        try:
            raw = base64.b64decode(str(data["raw_b64"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise ControlError(400, "raw_b64 (standard base64 of the RFC 822 bytes) is required") from exc
        stored = self.state.deliver(email, raw, thread_id=data.get("thread_id"), label_ids=data.get("label_ids"))
        return Reply.json(200, stored.to_json())

    def c_expire_history(self, request: Request, email: str) -> Reply:
        self.state.expire_history(email)
        return self._ok()

    def c_replace_ids(self, request: Request, email: str) -> Reply:
        self.state.set_replace_message_ids(email, bool(request.json().get("enabled")))
        return self._ok()

    def c_revoke_grants(self, request: Request, email: str) -> Reply:
        return Reply.json(200, {"revoked": self.state.revoke_grants(email)})

    def c_add_fault(self, request: Request) -> Reply:
        data = request.json()
        try:
            self.state.add_fault(
                str(data["op"]),
                str(data["kind"]),
                count=data.get("count", 1),
                mailbox=data.get("mailbox"),
                latency=float(data.get("latency", 0.0)),
                retry_at=data.get("retry_at"),
            )
        except KeyError as exc:
            raise ControlError(400, f"missing {exc}") from exc
        return self._ok()

    def c_clear_faults(self, request: Request) -> Reply:
        self.state.clear_faults()
        return self._ok()

    def c_random_faults(self, request: Request) -> Reply:
        data = request.json()
        self.state.set_random_faults(
            float(data.get("probability", 0.0)),
            list(data.get("kinds", [])),
            op=str(data.get("op", OP_SEND)),
            mailbox=data.get("mailbox"),
            latency=float(data.get("latency", 1.0)),
            retry_at=data.get("retry_at"),
            seed=data.get("seed"),
        )
        return self._ok()

    def c_fault_log(self, request: Request) -> Reply:
        return Reply.json(200, [f.to_json() for f in self.state.fault_log()])


# ------------------------------------------------------------------------- transport


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            # The client gave up (e.g. its timeout fired during a latency fault): normal here.
            logger.debug("client %s went away: %r", client_address, error)
            return
        logger.exception("sandbox: error while serving %s", client_address)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def drop_connections(self) -> None:
        with self._connections_lock:
            open_now = list(self._connections)
            self._connections.clear()
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httplib2 reuses connections
    server_version = "GoogleSandbox/1.0"
    timeout = 300  # idle keep-alive connections are dropped after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body are written separately: without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(Reply.json(411, {"error": "send a Content-Length"}))
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Reply.json(413, {"error": "body too large"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(self.path)
        request = Request(
            method=method,
            path=parts.path,
            query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            host=self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2]),
        )
        try:
            reply = self.server.app.dispatch(request)
        except Exception:  # a sandbox bug: answer 500 rather than hang the client
            logger.exception("sandbox error on %s %s", method, self.path)
            reply = Reply(500, errors.backend_error().to_bytes())
        if reply.disconnect is not None:
            self._disconnect(reply.disconnect)
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    def _disconnect(self, mode: str) -> None:
        """Drop the connection without answering: RST (``reset``) or FIN (``close``)."""
        self.close_connection = True
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the makefile() reference would keep the socket open
            self.connection.close()
        # "close": returning with close_connection set makes the server shut the
        # socket down cleanly (FIN) without a byte of response.


# ------------------------------------------------------------------------- facade

AccountSpec = str | tuple[str, str]


class GoogleSandbox:
    """A local stand-in for Google's OAuth and Gmail APIs, served over real HTTP.

    Point GOOGLE_AUTH_URI, GOOGLE_TOKEN_URI, GOOGLE_REVOKE_URI and GMAIL_API_ENDPOINT
    at :attr:`auth_uri`, :attr:`token_uri`, :attr:`revoke_uri` and :attr:`gmail_endpoint`.
    The control methods below are also served under ``/_sandbox/`` and mirrored by
    :class:`~google_sandbox.control.SandboxControl` for other processes.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clients: Iterable[OAuthClient | tuple[str, str]] = (),
        accounts: Iterable[AccountSpec] = (),
        default_account: str | None = None,
        access_token_lifetime: float = 3600.0,
    ) -> None:
        client_list = [c if isinstance(c, OAuthClient) else OAuthClient(c[0], c[1], None) for c in clients]
        account_list = [
            Account(email=a, display_name="") if isinstance(a, str) else Account(email=a[0], display_name=a[1])
            for a in accounts
        ]
        self.state = SandboxState(
            clients=client_list,
            accounts=account_list,
            default_account=default_account,
            access_token_lifetime=access_token_lifetime,
        )
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> GoogleSandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._server = _Server((self._host, self._port), SandboxApp(self.state))
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"google-sandbox-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (used by the CLI)."""
        if self._server is None:
            self._server = _Server((self._host, self._port), SandboxApp(self.state))
            self._port = self._server.server_address[1]
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            server, self._server = self._server, None
            server.drop_connections()
            server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def auth_uri(self) -> str:
        return self.base_url + AUTH_PATH

    @property
    def token_uri(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def revoke_uri(self) -> str:
        return self.base_url + REVOKE_PATH

    @property
    def gmail_endpoint(self) -> str:
        """The ``api_endpoint`` for ``googleapiclient.discovery.build`` (paths are ``gmail/v1/...``)."""
        return self.base_url + "/"

    # ---------------------------------------------------------------- control (same as SandboxControl)

    def reset(self) -> None:
        self.state.reset()

    def add_account(self, email: str, display_name: str = "") -> None:
        self.state.add_account(email, display_name)

    def accounts(self) -> list[dict[str, str]]:
        return self.state.accounts()

    def set_default_account(self, email: str | None) -> None:
        self.state.set_default_account(email)

    def register_client(self, client_id: str, client_secret: str, redirect_uris: Sequence[str] | None = None) -> None:
        self.state.register_client(client_id, client_secret, redirect_uris)

    def set_consent(self, *, deny: bool = False, grant_only: Sequence[str] | None = None) -> None:
        self.state.set_consent(deny=deny, grant_only=grant_only)

    def set_access_token_lifetime(self, seconds: float) -> None:
        self.state.set_access_token_lifetime(seconds)

    def set_replace_message_ids(self, email: str, enabled: bool) -> None:
        self.state.set_replace_message_ids(email, enabled)

    def issue_tokens(self, email: str, scopes: Sequence[str], *, client_id: str | None = None) -> dict[str, Any]:
        """Tokens for ``email`` without the browser round trip (see SandboxState.issue_tokens)."""
        return self.state.issue_tokens(email, scopes, client_id=client_id)

    def messages(self, email: str) -> list[MailboxMessage]:
        return self.state.messages(email)

    def sent_messages(self, email: str) -> list[MailboxMessage]:
        return self.state.messages(email, direction="sent")

    def send_times(self, email: str) -> list[float]:
        return self.state.send_times(email)

    def deliver(
        self,
        email: str,
        raw: bytes,
        *,
        thread_id: str | None = None,
        label_ids: Sequence[str] | None = None,
    ) -> MailboxMessage:
        return self.state.deliver(email, raw, thread_id=thread_id, label_ids=label_ids)

    def expire_history(self, email: str) -> None:
        self.state.expire_history(email)

    def revoke_grants(self, email: str) -> int:
        return self.state.revoke_grants(email)

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
        self.state.add_fault(op, kind, count=count, mailbox=mailbox, latency=latency, retry_at=retry_at)

    def set_random_faults(
        self,
        probability: float,
        kinds: Sequence[str],
        *,
        op: str = OP_SEND,
        mailbox: str | None = None,
        latency: float = 1.0,
        retry_at: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.state.set_random_faults(
            probability, kinds, op=op, mailbox=mailbox, latency=latency, retry_at=retry_at, seed=seed
        )

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def fault_log(self) -> list[AppliedFault]:
        return self.state.fault_log()

    def faults_applied(self, *, kind: str | None = None, op: str | None = None, mailbox: str | None = None) -> int:
        from .models import count_faults

        return count_faults(self.fault_log(), kind=kind, op=op, mailbox=mailbox)
