"""A local Google (OAuth 2.0 + Gmail API) sandbox that the real Google client libraries talk to.

In-process::

    with GoogleSandbox(clients=[("id", "secret")], accounts=["a@example.com"]) as sandbox:
        settings.GOOGLE_TOKEN_URI = sandbox.token_uri
        ...

Standalone: ``python -m google_sandbox --port 8765 --client-id X --client-secret Y
--account a@example.com``; other processes drive it with :class:`SandboxControl`.
This package never imports Django.
"""

from .cli import main, serve
from .control import SandboxControl, SandboxControlError
from .errors import ControlError
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
    OP_GET,
    OP_HISTORY,
    OP_LIST,
    OP_PROFILE,
    OP_SEND,
    OP_THREAD,
    OP_TOKEN_REFRESH,
    OPERATIONS,
    AppliedFault,
    MailboxMessage,
)
from .server import GoogleSandbox
from .state import OAuthClient

__all__ = [
    "DEFAULT_RETRY_AT",
    "FAULT_ACCEPT_THEN_CLOSE",
    "FAULT_ACCEPT_THEN_RESET",
    "FAULT_AUTH_ERROR",
    "FAULT_BACKEND_ERROR",
    "FAULT_DAILY_LIMIT",
    "FAULT_INVALID_GRANT",
    "FAULT_KINDS",
    "FAULT_LATENCY",
    "FAULT_RATE_LIMIT",
    "FAULT_UNAVAILABLE",
    "OPERATIONS",
    "OP_ANY",
    "OP_GET",
    "OP_HISTORY",
    "OP_LIST",
    "OP_PROFILE",
    "OP_SEND",
    "OP_THREAD",
    "OP_TOKEN_REFRESH",
    "AppliedFault",
    "ControlError",
    "GoogleSandbox",
    "MailboxMessage",
    "OAuthClient",
    "SandboxControl",
    "SandboxControlError",
    "main",
    "serve",
]
