"""Value types shared by the in-process sandbox and its HTTP control client.

Everything here round-trips through JSON (``to_json`` / ``from_json``) so that
:class:`~google_sandbox.server.GoogleSandbox` (in-process) and
:class:`~google_sandbox.control.SandboxControl` (over HTTP) return the
same objects.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

# Operations a fault can be attached to.
OP_SEND = "send"
OP_GET = "get"
OP_LIST = "list"
OP_HISTORY = "history"
OP_PROFILE = "profile"
OP_THREAD = "thread"
OP_TOKEN_REFRESH = "token_refresh"
OP_ANY = "any"
OPERATIONS = frozenset({OP_SEND, OP_GET, OP_LIST, OP_HISTORY, OP_PROFILE, OP_THREAD, OP_TOKEN_REFRESH, OP_ANY})

# Fault kinds.
FAULT_RATE_LIMIT = "rate_limit"  # 429 rateLimitExceeded ("Retry after <time>")
FAULT_DAILY_LIMIT = "daily_limit"  # 403 dailyLimitExceeded (domain usageLimits)
FAULT_AUTH_ERROR = "auth_error"  # 401 authError
FAULT_INVALID_GRANT = "invalid_grant"  # 400 invalid_grant on the refresh grant
FAULT_BACKEND_ERROR = "backend_error"  # 500 backendError
FAULT_UNAVAILABLE = "unavailable"  # 503
FAULT_LATENCY = "latency"  # sleep, then answer normally
FAULT_ACCEPT_THEN_RESET = "accept_then_reset"  # process, then RST without answering
FAULT_ACCEPT_THEN_CLOSE = "accept_then_close"  # process, then FIN without answering
FAULT_KINDS = frozenset(
    {
        FAULT_RATE_LIMIT,
        FAULT_DAILY_LIMIT,
        FAULT_AUTH_ERROR,
        FAULT_INVALID_GRANT,
        FAULT_BACKEND_ERROR,
        FAULT_UNAVAILABLE,
        FAULT_LATENCY,
        FAULT_ACCEPT_THEN_RESET,
        FAULT_ACCEPT_THEN_CLOSE,
    }
)

DEFAULT_RETRY_AT = "2026-11-27T20:00:00.000Z"


@dataclass(frozen=True)
class MailboxMessage:
    """One message stored in a sandbox mailbox, parsed for assertions."""

    gmail_id: str
    thread_id: str
    label_ids: list[str]
    header_list: list[tuple[str, str]]
    text_body: str | None
    html_body: str | None
    raw_b64: str  # standard base64 of the stored RFC 822 bytes
    received_at: float  # epoch seconds when the sandbox stored it
    history_id: int
    headers: dict[str, str] = field(default_factory=dict)  # first value of each header

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    def header(self, name: str) -> str | None:
        """Case-insensitive lookup of the first header called ``name``."""
        wanted = name.lower()
        for key, value in self.header_list:
            if key.lower() == wanted:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "gmail_id": self.gmail_id,
            "thread_id": self.thread_id,
            "label_ids": list(self.label_ids),
            "header_list": [[k, v] for k, v in self.header_list],
            "headers": dict(self.headers),
            "text_body": self.text_body,
            "html_body": self.html_body,
            "raw_b64": self.raw_b64,
            "received_at": self.received_at,
            "history_id": self.history_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MailboxMessage:
        return cls(
            gmail_id=data["gmail_id"],
            thread_id=data["thread_id"],
            label_ids=list(data["label_ids"]),
            header_list=[(str(k), str(v)) for k, v in data["header_list"]],
            headers=dict(data["headers"]),
            text_body=data["text_body"],
            html_body=data["html_body"],
            raw_b64=data["raw_b64"],
            received_at=float(data["received_at"]),
            history_id=int(data["history_id"]),
        )


@dataclass(frozen=True)
class AppliedFault:
    """A fault the sandbox actually applied to a request."""

    op: str  # the operation of the request it hit (never "any")
    kind: str
    mailbox: str | None  # None when the request had no known mailbox
    at: float  # epoch seconds

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "mailbox": self.mailbox, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppliedFault:
        return cls(op=data["op"], kind=data["kind"], mailbox=data["mailbox"], at=float(data["at"]))


def count_faults(
    log: list[AppliedFault],
    *,
    kind: str | None = None,
    op: str | None = None,
    mailbox: str | None = None,
) -> int:
    """How many applied faults match every given filter."""
    return sum(
        1
        for f in log
        if (kind is None or f.kind == kind)
        and (op is None or f.op == op)
        and (mailbox is None or (f.mailbox or "").lower() == mailbox.lower())
    )
