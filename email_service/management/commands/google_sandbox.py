"""`manage.py google_sandbox --port N`: serve the local Google (OAuth + Gmail API) for the demo and manual tests.

Registers this project's OAuth client (GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET / GOOGLE_REDIRECT_URI
unless given) and prints the GOOGLE_* / GMAIL_API_ENDPOINT values that point the app at it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from email_service.sandbox import main as sandbox_main


class Command(BaseCommand):
    help = "Serve the local Google sandbox (OAuth + Gmail API) until Ctrl-C or SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8765, help="port to bind (0 picks a free one)")
        parser.add_argument("--client-id", help="OAuth client id to accept (default: GOOGLE_CLIENT_ID)")
        parser.add_argument("--client-secret", help="its secret (default: GOOGLE_CLIENT_SECRET)")
        parser.add_argument(
            "--redirect-uri", action="append", help="allowed redirect URI, repeatable (default: GOOGLE_REDIRECT_URI)"
        )
        parser.add_argument(
            "--account", action="append", default=[], metavar="EMAIL[=Display Name]", help="a Google account"
        )
        parser.add_argument("--default-account", help="the account that consents when no login_hint matches")
        parser.add_argument("--token-lifetime", type=float, default=3600.0, help="access token lifetime, seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        client_id = options["client_id"] or settings.GOOGLE_CLIENT_ID
        client_secret = options["client_secret"] or settings.GOOGLE_CLIENT_SECRET
        if not client_id or not client_secret:
            raise CommandError("an OAuth client is needed: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET or pass both")
        argv = [
            "--host", options["host"], "--port", str(options["port"]),
            "--client-id", client_id, "--client-secret", client_secret,
            "--token-lifetime", str(options["token_lifetime"]),
        ]  # fmt: skip
        for uri in options["redirect_uri"] or [settings.GOOGLE_REDIRECT_URI]:
            argv += ["--redirect-uri", uri]
        for account in options["account"]:
            argv += ["--account", account]
        if options["default_account"]:
            argv += ["--default-account", options["default_account"]]
        sandbox_main(argv)
