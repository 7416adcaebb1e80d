"""Recompute the dashboard rollups from raw events and report every difference (exit 1 on drift)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from email_service.events.rollups import actual_rollups, expected_rollups, rebuild_rollups, rollup_differences
from email_service.models import Client


class Command(BaseCommand):
    help = (
        "Replays every client's events through the counting rules and compares the result with "
        "StepDailyStats and ClientDailyActivity. Prints each difference; exits non-zero when any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--client", type=uuid.UUID, help="Only this client (UUID).")
        parser.add_argument("--repair", action="store_true", help="Rebuild the rollups of clients that drifted.")

    def handle(self, *args: Any, **options: Any) -> None:
        clients = Client.objects.order_by("pk")
        if options["client"]:
            clients = clients.filter(pk=options["client"])
            if not clients.exists():
                raise CommandError(f"No client {options['client']}.")
        drifted = 0
        checked = 0
        for client in clients.iterator():
            checked += 1
            lines = rollup_differences(
                expected=expected_rollups(client_id=client.pk, tz_name=client.timezone),
                actual=actual_rollups(client_id=client.pk),
            )
            if not lines:
                continue
            drifted += 1
            for line in lines:
                self.stdout.write(f"{client.pk} {line}")
            if options["repair"]:
                with transaction.atomic():
                    rebuild_rollups(client=Client.objects.select_for_update().get(pk=client.pk))
                self.stdout.write(f"{client.pk} rebuilt")
        if drifted and not options["repair"]:
            raise CommandError(f"Rollups differ from the events for {drifted} of {checked} clients.")
        self.stdout.write(f"Checked {checked} clients: {drifted} drifted{' (repaired)' if drifted else ''}.")
