"""Dashboard benchmark: load a synthetic history with COPY, build the rollups in SQL, time every route.

    python bench/dashboard/run.py --scale 1.0          # 1,000,000 sent emails, ~5.5M events, 100 clients
    python bench/dashboard/run.py --skip-load          # re-measure the data already loaded

Works in its own database (default `oree_bench_dashboard`, created if missing, emptied on load).
See README.md next to this file for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TIMEZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney", "America/Los_Angeles"]
DAYS_OF_HISTORY = 180
BATCH_MESSAGES = 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1,000,000 sent emails (default)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--largest-share", type=float, default=0.30)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per route")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--verify", action="store_true", help="run verify_rollups for the largest client")
    parser.add_argument("--database", default="oree_bench_dashboard")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def setup_django(args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = f"{args.server}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "OreeStats.settings_test")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
    import psycopg

    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database]).fetchone():
            conn.execute(f'CREATE DATABASE "{args.database}"')
    import django

    django.setup()


def ts(moment: datetime) -> str:
    return moment.isoformat()


NULL = "\\N"


class Loader:
    """Streams rows as COPY text, a batch of messages at a time (FK checks off while loading)."""

    def __init__(self, cursor: Any) -> None:
        from email_service.models import EmailEvent, EmailSendQueue, Lead

        self.cursor = cursor
        self.tables: dict[str, tuple[list[str], list[str]]] = {}
        for model in (Lead, EmailSendQueue, EmailEvent):
            columns = [f.column for f in model._meta.concrete_fields if not (model is EmailEvent and f.column == "id")]
            self.tables[model._meta.db_table] = (columns, [])
        self.queue_defaults = {
            "mailbox_id": NULL,
            "personalization": "{}",
            "status": "sent",
            "status_reason": "",
            "send_at": NULL,
            "attempts": "1",
            "lease_expires_at": NULL,
            "claimed_by": "",
            "message_id": "",
            "send_started_at": NULL,
            "gmail_message_id": "",
            "gmail_thread_id": "",
            "rfc_message_id": "",
            "in_reply_to": "",
            "references": "",
            "last_error": "",
            "first_opened_at": NULL,
            "first_clicked_at": NULL,
            "machine_opened_at": NULL,
            "machine_clicked_at": NULL,
            "replied_at": NULL,
            "auto_replied_at": NULL,
            "bounced_at": NULL,
            "unsubscribed_at": NULL,
            "open_count": "0",
            "click_count": "0",
        }

    def add(self, table: str, values: dict[str, str]) -> None:
        columns, rows = self.tables[table]
        rows.append("\t".join(values.get(c, NULL) for c in columns))

    def flush(self) -> None:
        for table, (columns, rows) in self.tables.items():
            if not rows:
                continue
            quoted = ", ".join(f'"{c}"' for c in columns)
            with self.cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
                copy.write("\n".join(rows) + "\n")
            rows.clear()


def load(args: argparse.Namespace) -> dict[str, int]:
    from django.db import connection, transaction

    from email_service.dashboard.sessions import create_client
    from email_service.models import Campaign, Client, Mailbox

    rng = random.Random(42)
    now = datetime.now(UTC)
    total_messages = int(1_000_000 * args.scale)
    largest = int(total_messages * args.largest_share)
    per_other, remainder = divmod(total_messages - largest, args.clients - 1)
    counts = {"clients": 0, "messages": 0, "events": 0, "leads": 0}
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE email_service_client, email_service_emailevent, email_service_emailsendqueue, "
            "email_service_lead, email_service_campaign, email_service_mailbox, email_service_stepdailystats, "
            "email_service_clientdailyactivity, email_service_clientsession CASCADE"
        )
    for n in range(args.clients):
        create_client(
            name="Largest Co" if n == 0 else f"Client {n:03d}",
            email=f"owner{n}@bench.test",
            password="Bench-Password-2048",
            timezone_name="Europe/Paris" if n == 0 else TIMEZONES[n % len(TIMEZONES)],
        )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL session_replication_role = replica")  # no FK triggers during the bulk load
        # Secondary indexes are rebuilt once at the end: far faster than maintaining them row by row.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('email_service_emailevent', 'email_service_emailsendqueue', 'email_service_lead') "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        loader = Loader(cursor.cursor)
        for n, client in enumerate(Client.objects.order_by("email")):
            # The first `remainder` smaller clients take one more, so the total is exact.
            messages = largest if client.email == "owner0@bench.test" else per_other + (0 < n <= remainder)
            campaigns = [client.campaigns.get(is_default=True).pk] + [
                Campaign.objects.create(client=client, name=f"Campaign {c}").pk for c in range(1, 6)
            ]
            mailboxes = [
                Mailbox.objects.create(
                    client=client,
                    email=f"sdr{m}@c{n}.bench.test",
                    sent_today=rng.randint(0, 400),
                    sent_today_date=now.date(),
                    last_sent_at=now - timedelta(minutes=rng.randint(1, 300)),
                    connected_at=now - timedelta(days=200),
                ).pk
                for m in range(20 if n == 0 else 4)
            ]
            produce_client(loader, rng, client, campaigns, mailboxes, messages, now, counts)
            counts["clients"] += 1
            print(
                f"  client {n + 1}/{args.clients}: {counts['messages']:,} messages, {counts['events']:,} events",
                flush=True,
            )
        print(f"  rebuilding {len(indexes)} indexes", flush=True)
        for _, definition in indexes:
            cursor.execute(definition)
    return counts


def produce_client(
    loader: Loader,
    rng: random.Random,
    client: Any,
    campaigns: list[Any],
    mailboxes: list[Any],
    total: int,
    now: datetime,
    counts: dict[str, int],
) -> None:
    client_id = str(client.pk)
    lead = ""
    for index in range(total):
        step = index % 3 + 1
        if step == 1:
            lead = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            lead_mailbox = rng.choice(mailboxes)
            campaign = str(rng.choice(campaigns))
            first_sent = now - timedelta(seconds=rng.randint(4 * 86400, DAYS_OF_HISTORY * 86400))
            loader.add(
                "email_service_lead",
                {
                    "id": lead,
                    "client_id": client_id,
                    "email": f"{lead[:12]}@prospect.test",
                    "first_name": "Pat",
                    "last_name": "",
                    "company": "",
                    "status": "active",
                    "created_at": ts(first_sent),
                },
            )
            counts["leads"] += 1
        sent_at = first_sent + timedelta(days=3 * (step - 1), seconds=rng.randint(0, 3600))
        message = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        row = dict(loader.queue_defaults)
        row.update(
            {
                "id": message,
                "client_id": client_id,
                "campaign_id": campaign,
                "lead_id": lead,
                "mailbox_id": str(lead_mailbox),
                "sequence_number": str(step),
                "recipient_email": f"{lead[:12]}@prospect.test",
                "subject": f"Step {step} for you",
                "body_html": "<p>Hello</p>",
                "next_attempt_at": ts(sent_at),
                "sent_at": ts(sent_at),
                "unsubscribe_token": message.replace("-", "")[:32],
                "created_at": ts(sent_at),
                "updated_at": ts(sent_at),
            }
        )
        base = {
            "client_id": client_id,
            "lead_id": lead,
            "message_id": message,
            "mailbox_id": str(lead_mailbox),
            "campaign_id": campaign,
            "sequence_number": str(step),
            "link_id": NULL,
            "is_machine": "f",
            "machine_reason": "",
            "ip": NULL,
            "user_agent": "",
            "gmail_message_id": "",
            "dedupe_key": NULL,
            "detail": "{}",
        }
        events = [("queued", sent_at - timedelta(minutes=5), False, "{}"), ("sent", sent_at, False, "{}")]
        if rng.random() < 0.30:
            events.append(("open", sent_at + timedelta(seconds=2), True, "{}"))
            row["machine_opened_at"] = ts(sent_at + timedelta(seconds=2))
        if rng.random() < 0.60:
            opens = sorted(sent_at + timedelta(seconds=rng.randint(600, 5 * 86400)) for _ in range(rng.randint(1, 7)))
            events += [("open", moment, False, "{}") for moment in opens]
            row["first_opened_at"], row["open_count"] = ts(opens[0]), str(len(opens))
        if rng.random() < 0.10:
            events.append(("click", sent_at + timedelta(seconds=3), True, "{}"))
            row["machine_clicked_at"] = ts(sent_at + timedelta(seconds=3))
        if rng.random() < 0.25:
            clicks = sorted(sent_at + timedelta(seconds=rng.randint(600, 5 * 86400)) for _ in range(rng.randint(1, 3)))
            events += [("click", moment, False, "{}") for moment in clicks]
            row["first_clicked_at"], row["click_count"] = ts(clicks[0]), str(len(clicks))
        roll = rng.random()
        for kind, column, low, high in (
            ("reply", "replied_at", 0.0, 0.05),
            ("auto_reply", "auto_replied_at", 0.05, 0.07),
            ("bounce", "bounced_at", 0.07, 0.09),
            ("unsubscribe", "unsubscribed_at", 0.09, 0.10),
        ):
            if low <= roll < high:
                moment = sent_at + timedelta(seconds=rng.randint(60, 3 * 86400))
                detail = json.dumps({"subject": f"Re: Step {step} for you", "snippet": "Thanks, tell me more"})
                events.append((kind, moment, False, detail if kind != "unsubscribe" else "{}"))
                row[column] = ts(moment)
        events.sort(key=lambda e: e[1])
        loader.add("email_service_emailsendqueue", row)
        for kind, moment, machine, detail in events:
            loader.add(
                "email_service_emailevent",
                {
                    **base,
                    "event_type": kind,
                    "occurred_at": ts(moment),
                    "is_machine": "t" if machine else "f",
                    "machine_reason": "bench" if machine else "",
                    "detail": detail,
                },
            )
        counts["messages"] += 1
        counts["events"] += len(events)
        if index % BATCH_MESSAGES == BATCH_MESSAGES - 1:
            loader.flush()
    loader.flush()


STEP_ROLLUP_SQL = """
INSERT INTO email_service_stepdailystats (client_id, campaign_id, sequence_number, date, sent, failed, opened,
    clicked, replied, auto_replied, bounced, unsubscribed, machine_opened, machine_clicked)
SELECT q.client_id, q.campaign_id, q.sequence_number, (q.sent_at AT TIME ZONE c.timezone)::date,
    count(*), 0, count(q.first_opened_at), count(q.first_clicked_at), count(q.replied_at), count(q.auto_replied_at),
    count(q.bounced_at), count(q.unsubscribed_at), count(q.machine_opened_at), count(q.machine_clicked_at)
FROM email_service_emailsendqueue q JOIN email_service_client c ON c.id = q.client_id
WHERE q.sent_at IS NOT NULL
GROUP BY 1, 2, 3, 4
"""

ACTIVITY_ROLLUP_SQL = """
INSERT INTO email_service_clientdailyactivity (client_id, date, sent, opens, clicks, replies, bounces, unsubscribes,
    machine_opens, machine_clicks)
SELECT q.client_id, (v.moment AT TIME ZONE c.timezone)::date,
    count(*) FILTER (WHERE v.kind = 'sent'), count(*) FILTER (WHERE v.kind = 'opens'),
    count(*) FILTER (WHERE v.kind = 'clicks'), count(*) FILTER (WHERE v.kind = 'replies'),
    count(*) FILTER (WHERE v.kind = 'bounces'), count(*) FILTER (WHERE v.kind = 'unsubscribes'),
    count(*) FILTER (WHERE v.kind = 'machine_opens'), count(*) FILTER (WHERE v.kind = 'machine_clicks')
FROM email_service_emailsendqueue q
JOIN email_service_client c ON c.id = q.client_id
CROSS JOIN LATERAL (VALUES ('sent', q.sent_at), ('opens', q.first_opened_at), ('clicks', q.first_clicked_at),
    ('replies', q.replied_at), ('bounces', q.bounced_at), ('unsubscribes', q.unsubscribed_at),
    ('machine_opens', q.machine_opened_at), ('machine_clicks', q.machine_clicked_at)) AS v(kind, moment)
WHERE v.moment IS NOT NULL
GROUP BY 1, 2
"""


def build_rollups() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE email_service_stepdailystats, email_service_clientdailyactivity")
        cursor.execute(STEP_ROLLUP_SQL)
        cursor.execute(ACTIVITY_ROLLUP_SQL)
        cursor.execute("VACUUM ANALYZE")  # what autovacuum would have done: visibility map for index-only scans


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    from rest_framework.test import APIClient

    from email_service.dashboard.sessions import issue_access_token
    from email_service.dashboard.stats import REPLY_KINDS, encode_reply_cursor
    from email_service.models import Client, EmailEvent

    client = Client.objects.get(email="owner0@bench.test")
    campaign = client.campaigns.get(is_default=True)
    inbound = EmailEvent.objects.filter(client=client, event_type__in=REPLY_KINDS).order_by("-occurred_at", "-id")
    depth = min(20_000, inbound.count() - 100)
    deep = inbound[depth]
    deep_cursor = encode_reply_cursor(occurred_at=deep.occurred_at, event_id=deep.pk)
    api = APIClient(HTTP_HOST="localhost")  # in ALLOWED_HOSTS by default
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_access_token(client=client).token}")
    routes: list[tuple[str, Callable[[], Any]]] = [
        ("GET /api/client/stats", lambda: api.get("/api/client/stats")),
        ("GET /api/client/campaigns", lambda: api.get("/api/client/campaigns")),
        ("GET /api/client/replies", lambda: api.get("/api/client/replies")),
        (
            "GET /api/client/replies?page=100&page_size=100",
            lambda: api.get("/api/client/replies?page=100&page_size=100"),
        ),
        (
            f"GET /api/client/replies?cursor=<{depth:,} deep>&page_size=100",
            lambda: api.get("/api/client/replies", {"cursor": deep_cursor, "page_size": "100"}),
        ),
        ("GET /api/client/timeline?days=30", lambda: api.get("/api/client/timeline?days=30")),
        ("GET /api/client/timeline?days=366", lambda: api.get("/api/client/timeline?days=366")),
        ("GET /api/client/mailboxes", lambda: api.get("/api/client/mailboxes")),
        ("GET /api/client/settings", lambda: api.get("/api/client/settings")),
        ("POST /api/client/campaigns/<id>/pause", lambda: api.post(f"/api/client/campaigns/{campaign.pk}/pause")),
        ("POST /api/client/campaigns/<id>/resume", lambda: api.post(f"/api/client/campaigns/{campaign.pk}/resume")),
    ]
    results = []
    for name, call in routes:
        for _ in range(5):
            assert call().status_code == 200, name
        timings = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = call()
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.content[:200])
        timings.sort()
        result = {
            "route": name,
            "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 1),
            "max_ms": round(timings[-1], 1),
        }
        results.append(result)
        print(f"  {name:<52} p50 {result['p50_ms']:>7} ms   p95 {result['p95_ms']:>7} ms", flush=True)
    return results


def main() -> None:
    args = parse_args()
    setup_django(args)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if not args.skip_load:
        started = time.perf_counter()
        counts = load(args)
        print(f"loaded {counts} in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        build_rollups()
        print(f"rollups built in SQL in {time.perf_counter() - started:.0f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM email_service_emailsendqueue),"
            " (SELECT count(*) FROM email_service_emailevent),"
            " (SELECT count(*) FROM email_service_emailsendqueue q JOIN email_service_client c ON c.id = q.client_id"
            "  WHERE c.email = 'owner0@bench.test'), (SELECT count(*) FROM email_service_stepdailystats),"
            " (SELECT count(*) FROM email_service_clientdailyactivity)"
        )
        messages, events, largest, step_rows, activity_rows = cursor.fetchone()
    print(
        f"data: {messages:,} sent emails, {events:,} events; largest client {largest:,} emails; "
        f"rollup rows: {step_rows:,} step-days, {activity_rows:,} client-days",
        flush=True,
    )
    if args.verify:
        from email_service.models import Client

        started = time.perf_counter()
        call_command("verify_rollups", "--client", str(Client.objects.get(email="owner0@bench.test").pk))
        print(f"verify_rollups (largest client) in {time.perf_counter() - started:.0f} s", flush=True)
    results = measure(args)
    if args.json:
        args.json.write_text(
            json.dumps({"messages": messages, "events": events, "largest": largest, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
