"""`manage.py create_client`: create a client account and print its UUID last."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from email_service.dashboard.sessions import create_client
from email_service.exceptions import OreeError


class Command(BaseCommand):
    help = "Create a client account (and its default campaign); prints the client's UUID as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--email", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/Paris (default UTC).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            client = create_client(
                name=options["name"],
                email=options["email"],
                password=options["password"],
                timezone_name=options["timezone"],
            )
        except OreeError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(f"Created client {client.name} <{client.email}>")
        self.stdout.write(str(client.pk))
