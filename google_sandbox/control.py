"""Drive a running sandbox from another process through its ``/_sandbox/`` control API."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from .models import OP_SEND, AppliedFault, MailboxMessage, count_faults


class SandboxControlError(RuntimeError):
    """The control API refused a request (bad arguments, unknown mailbox...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class SandboxControl:
    """Same methods as :class:`~google_sandbox.server.GoogleSandbox`, over HTTP."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    # ---------------------------------------------------------------- plumbing

    def _call(self, method: str, path: str, payload: Any = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}/_sandbox{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise SandboxControlError(exc.code, str(detail)) from None
        return json.loads(body) if body else None

    @staticmethod
    def _box(email: str) -> str:
        return "/mailboxes/" + urllib.parse.quote(email, safe="")

    # ---------------------------------------------------------------- control

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def add_account(self, email: str, display_name: str = "") -> None:
        self._call("POST", "/accounts", {"email": email, "display_name": display_name})

    def accounts(self) -> list[dict[str, str]]:
        return list(self._call("GET", "/accounts"))

    def set_default_account(self, email: str | None) -> None:
        self._call("POST", "/default-account", {"email": email})

    def register_client(self, client_id: str, client_secret: str, redirect_uris: Sequence[str] | None = None) -> None:
        payload = {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": list(redirect_uris) if redirect_uris is not None else None,
        }
        self._call("POST", "/clients", payload)

    def set_consent(self, *, deny: bool = False, grant_only: Sequence[str] | None = None) -> None:
        self._call(
            "POST", "/consent", {"deny": deny, "grant_only": list(grant_only) if grant_only is not None else None}
        )

    def set_access_token_lifetime(self, seconds: float) -> None:
        self._call("POST", "/token-lifetime", {"seconds": seconds})

    def set_replace_message_ids(self, email: str, enabled: bool) -> None:
        self._call("POST", self._box(email) + "/replace-message-ids", {"enabled": enabled})

    def issue_tokens(self, email: str, scopes: Sequence[str], *, client_id: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/tokens", {"email": email, "scopes": list(scopes), "client_id": client_id}))

    def messages(self, email: str) -> list[MailboxMessage]:
        return [MailboxMessage.from_json(m) for m in self._call("GET", self._box(email) + "/messages")]

    def sent_messages(self, email: str) -> list[MailboxMessage]:
        found = self._call("GET", self._box(email) + "/messages", query={"direction": "sent"})
        return [MailboxMessage.from_json(m) for m in found]

    def send_times(self, email: str) -> list[float]:
        return [float(t) for t in self._call("GET", self._box(email) + "/send-times")]

    def deliver(
        self,
        email: str,
        raw: bytes,
        *,
        thread_id: str | None = None,
        label_ids: Sequence[str] | None = None,
    ) -> MailboxMessage:
        payload = {
            "raw_b64": base64.b64encode(raw).decode("ascii"),
            "thread_id": thread_id,
            "label_ids": list(label_ids) if label_ids is not None else None,
        }
        return MailboxMessage.from_json(self._call("POST", self._box(email) + "/deliver", payload))

    def expire_history(self, email: str) -> None:
        self._call("POST", self._box(email) + "/expire-history", {})

    def revoke_grants(self, email: str) -> int:
        return int(self._call("POST", self._box(email) + "/revoke-grants", {})["revoked"])

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
        payload = {
            "op": op,
            "kind": kind,
            "count": count,
            "mailbox": mailbox,
            "latency": latency,
            "retry_at": retry_at,
        }
        self._call("POST", "/faults", payload)

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
        payload = {
            "probability": probability,
            "kinds": list(kinds),
            "op": op,
            "mailbox": mailbox,
            "latency": latency,
            "retry_at": retry_at,
            "seed": seed,
        }
        self._call("POST", "/faults/random", payload)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def fault_log(self) -> list[AppliedFault]:
        return [AppliedFault.from_json(f) for f in self._call("GET", "/faults/log")]

    def faults_applied(self, *, kind: str | None = None, op: str | None = None, mailbox: str | None = None) -> int:
        return count_faults(self.fault_log(), kind=kind, op=op, mailbox=mailbox)
