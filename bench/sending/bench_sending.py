"""Sending pipeline benchmarks: drain rate, paced rate, enqueue rate. See README.md in this folder.

Runs against PostgreSQL and Redis (DATABASE_URL / REDIS_URL; the database is created and migrated),
the Google sandbox in this process with a send latency, and real `celery -A OreeStats worker`
processes. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "OreeStats.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oree_sending_bench")


def _ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[-1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


_ensure_database()

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client as HttpClient  # noqa: E402
from django.utils import timezone  # noqa: E402

from email_service.models import EmailSendQueue, Mailbox  # noqa: E402
from email_service.tasks import dispatch_due_task  # noqa: E402
from google_sandbox.models import FAULT_LATENCY, OP_SEND  # noqa: E402
from tests.sending.gmail import connect_mailbox, make_test_sandbox, sandbox_env  # noqa: E402
from tests.sending.workers import Workers, purge_broker  # noqa: E402


def _cpu_seconds_of_groups(pgids: set[int]) -> float:
    """utime + stime of every live process in these process groups (workers and their pool children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # field 5 (pgrp) after the comm
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _reset() -> None:
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE email_service_client, email_service_emailevent, email_service_stepdailystats, "
            "email_service_clientdailyactivity CASCADE"
        )
    purge_broker()


def _client(name: str):
    from tests.factories import ClientFactory

    return ClientFactory(name=name)


def _bulk_queue(client, mailboxes, count: int) -> None:
    """Queue `count` first steps round-robin over the mailboxes, in bulk (enqueue speed is measured apart)."""
    from email_service.models import Lead, LeadMailboxAssignment

    campaign = client.campaigns.get(is_default=True)
    leads = [Lead(id=uuid.uuid4(), client=client, email=f"lead{n}@prospect.test") for n in range(count)]
    Lead.objects.bulk_create(leads, batch_size=1000)
    boxes = [mailboxes[n % len(mailboxes)] for n in range(count)]
    LeadMailboxAssignment.objects.bulk_create(
        [LeadMailboxAssignment(lead=lead, client=client, mailbox=box) for lead, box in zip(leads, boxes, strict=True)],
        batch_size=1000,
    )
    now = timezone.now()
    EmailSendQueue.objects.bulk_create(
        [
            EmailSendQueue(
                client=client,
                campaign=campaign,
                lead=lead,
                mailbox=box,
                sequence_number=1,
                recipient_email=lead.email,
                subject=f"Hello {n}",
                body_html=f"<p>Hi lead {n}, <a href='https://example.test/{n}'>a link</a>.</p>",
                next_attempt_at=now,
            )
            for n, (lead, box) in enumerate(zip(leads, boxes, strict=True))
        ],
        batch_size=1000,
    )


def drain(sandbox, *, mailboxes: int, emails: int, rate: float, workers: int, concurrency: int, tmp: Path):
    _reset()
    client = _client("Drain")
    boxes = [
        connect_mailbox(sandbox, client=client, email=f"box{n}@drain.test", max_sends_per_second=rate)
        for n in range(mailboxes)
    ]
    started = time.monotonic()
    _bulk_queue(client, boxes, emails)
    enqueue_seconds = time.monotonic() - started
    pool = Workers(tmp, {**sandbox_env(sandbox), "GMAIL_HTTP_TIMEOUT": "30", "SEND_LEASE_SECONDS": "120"})
    procs = pool.start(workers, concurrency=concurrency)
    time.sleep(4)  # worker start-up is not drain time
    cpu_before = _cpu_seconds_of_groups({p.pid for p in procs})
    t0 = time.monotonic()
    sent = 0
    try:
        while sent < emails and time.monotonic() - t0 < 1800:
            dispatch_due_task.delay()  # stands in for beat
            time.sleep(1)
            sent = EmailSendQueue.objects.filter(status="sent").count()
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds_of_groups({p.pid for p in procs}) - cpu_before
    finally:
        pool.stop()
    arrivals = {box.email: sorted(m.received_at for m in sandbox.sent_messages(box.email)) for box in boxes}
    first = min(t[0] for t in arrivals.values() if t)
    last = max(t[-1] for t in arrivals.values() if t)
    worst_window = max(
        (sum(1 for u in times[i:] if u < t + 1.0) for times in arrivals.values() for i, t in enumerate(times)),
        default=0,
    )
    claim_gaps = []
    for box in boxes:
        starts = sorted(
            t for t in EmailSendQueue.objects.filter(mailbox=box).values_list("send_started_at", flat=True) if t
        )
        claim_gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    duplicates = sum(len(t) for t in arrivals.values()) - len(
        {m.header("X-Oree-Queue-Id") for box in boxes for m in sandbox.sent_messages(box.email)}
    )
    return {
        "mailboxes": mailboxes,
        "emails": emails,
        "rate_per_mailbox": rate,
        "workers": f"{workers} x prefork {concurrency}",
        "sent": sent,
        "duplicates": duplicates,
        "enqueue_seconds": round(enqueue_seconds, 1),
        "drain_seconds": round(elapsed, 1),
        "emails_per_minute": round(sent / (last - first) * 60) if last > first else None,
        "ceiling_per_minute": round(mailboxes * rate * 60),
        "worker_cpu_ms_per_email": round(cpu * 1000 / max(sent, 1), 1),
        "min_claim_gap_s": round(min(claim_gaps), 3) if claim_gaps else None,
        "max_arrivals_in_any_1s_per_mailbox": worst_window,
    }


def enqueue_rate(*, count: int, batch_size: int):
    _reset()
    from django.conf import settings

    client = _client("Enqueue")
    Mailbox.objects.create(client=client, email="enqueue@enqueue.test")
    http = HttpClient(HTTP_AUTHORIZATION=f"Bearer {settings.OREE_API_KEY}", SERVER_NAME="localhost")

    def item(n: int):
        return {
            "lead_id": str(uuid.uuid4()),
            "client_id": str(client.pk),
            "recipient_email": f"lead{n}@prospect.test",
            "email_subject": "Hello",
            "email_body": "<p>Hi there, a short cold email body with <a href='https://x.test'>a link</a>.</p>",
            "sequence_number": 1,
        }

    t0 = time.monotonic()
    for n in range(count):
        response = http.post("/api/email/send", json.dumps(item(n)), content_type="application/json")
        assert response.status_code == 202, response.content
    single = count / (time.monotonic() - t0)
    t0 = time.monotonic()
    for start in range(0, count, batch_size):
        body = {"emails": [item(count + n) for n in range(start, min(count, start + batch_size))]}
        response = http.post("/api/email/send/batch", json.dumps(body), content_type="application/json")
        assert response.status_code == 200 and response.json()["queued"] == len(body["emails"]), response.content
    batch = count / (time.monotonic() - t0)
    purge_broker()
    return {
        "emails": count,
        "single_per_second": round(single),
        "batch_per_second": round(batch),
        "batch_size": batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["drain", "paced", "enqueue", "all"])
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/oree-bench-sending"))
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    with make_test_sandbox() as sandbox:
        sandbox.add_fault(OP_SEND, FAULT_LATENCY, count=None, latency=args.latency)
        if args.scenario in ("drain", "all"):
            results["drain"] = drain(
                sandbox,
                mailboxes=args.mailboxes,
                emails=args.emails,
                rate=2.5,
                workers=args.workers,
                concurrency=args.concurrency,
                tmp=tmp,
            )
            sandbox.reset()
            sandbox.add_fault(OP_SEND, FAULT_LATENCY, count=None, latency=args.latency)
        if args.scenario in ("paced", "all"):
            results["paced"] = drain(
                sandbox,
                mailboxes=20,
                emails=20 * 30,
                rate=1.0,
                workers=args.workers,
                concurrency=args.concurrency,
                tmp=tmp,
            )
    if args.scenario in ("enqueue", "all"):
        results["enqueue"] = enqueue_rate(count=1000, batch_size=500)
    results["at"] = timezone.now().isoformat(timespec="seconds")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
