"""``python -m google_sandbox``: run the Google sandbox standalone.

The OAuth client it accepts comes from ``--client-id``/``--client-secret``/``--redirect-uri``, or else
from the same ``GOOGLE_CLIENT_ID``/``GOOGLE_CLIENT_SECRET``/``GOOGLE_REDIRECT_URI`` variables the app
reads, so one environment points both at each other.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TextIO

from .server import GoogleSandbox
from .state import OAuthClient


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m google_sandbox",
        description="Serve a local stand-in for Google's OAuth and Gmail APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (0 picks a free one)")
    parser.add_argument(
        "--client-id",
        default=os.environ.get("GOOGLE_CLIENT_ID"),
        help="register this OAuth client id (GOOGLE_CLIENT_ID)",
    )
    parser.add_argument(
        "--client-secret", default=os.environ.get("GOOGLE_CLIENT_SECRET"), help="its secret (GOOGLE_CLIENT_SECRET)"
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help="allowed redirect URI of the client (repeatable; default: GOOGLE_REDIRECT_URI, else any)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="EMAIL[=Display Name]",
        help="add a Google account (repeatable)",
    )
    parser.add_argument(
        "--default-account",
        help="account that consents when no login_hint matches (default: none, so a chooser page is shown)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=3600.0,
        help="access token lifetime in seconds (default 3600)",
    )
    return parser


def _accounts(specs: Sequence[str]) -> list[tuple[str, str]]:
    result = []
    for spec in specs:
        email, _, name = spec.partition("=")
        result.append((email.strip(), name.strip()))
    return result


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    clients: Sequence[OAuthClient | tuple[str, str]] = (),
    accounts: Sequence[str | tuple[str, str]] = (),
    default_account: str | None = None,
    access_token_lifetime: float = 3600.0,
    out: TextIO | None = None,
    ready: Callable[[GoogleSandbox], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, printing the settings that point the app at it.

    ``ready`` is called with the running sandbox (e.g. to seed accounts). Setting
    ``stop_event`` stops it too, which is how a caller in another thread ends it.
    """
    stream = out or sys.stdout
    sandbox = GoogleSandbox(
        host,
        port,
        clients=clients,
        accounts=accounts,
        default_account=default_account,
        access_token_lifetime=access_token_lifetime,
    )
    sandbox.start()
    stopping = stop_event or threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        print(f"Google sandbox listening on {sandbox.base_url}", file=stream)
        print(f"GOOGLE_AUTH_URI={sandbox.auth_uri}", file=stream)
        print(f"GOOGLE_TOKEN_URI={sandbox.token_uri}", file=stream)
        print(f"GOOGLE_REVOKE_URI={sandbox.revoke_uri}", file=stream)
        print(f"GMAIL_API_ENDPOINT={sandbox.gmail_endpoint}", file=stream)
        print(f"control API: {sandbox.base_url}/_sandbox/", file=stream, flush=True)
        if ready is not None:
            ready(sandbox)
        while not stopping.wait(0.5):  # a timed wait stays interruptible by Ctrl-C
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.client_id) != bool(args.client_secret):
        build_parser().error("--client-id and --client-secret go together")
    clients = []
    redirect_uris = args.redirect_uri or (
        [os.environ["GOOGLE_REDIRECT_URI"]] if os.environ.get("GOOGLE_REDIRECT_URI") else []
    )
    if args.client_id:
        clients.append(OAuthClient(args.client_id, args.client_secret, tuple(redirect_uris) if redirect_uris else None))
    serve(
        args.host,
        args.port,
        clients=clients,
        accounts=_accounts(args.account),
        default_account=args.default_account,
        access_token_lifetime=args.token_lifetime,
    )
    return 0
