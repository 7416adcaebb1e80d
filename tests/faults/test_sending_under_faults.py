"""Workers SIGKILLed mid-run while Gmail fails 20% of sends: every email still arrives exactly once.

The short version of `bench/faults/run.py` (which also restarts Redis and PostgreSQL: too slow
and too disruptive for the shared test servers, so left to the bench).
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
from django.core.management import call_command

from bench.faults.harness import (
    FAULT_MIX,
    arm_faults,
    connect_sandbox_mailbox,
    faults_by_kind,
    unsettled,
    unsettled_rows,
    verify,
)
from email_service.models import EmailSendQueue
from email_service.sending.enqueue import SendRequest, enqueue_email
from email_service.tasks import dispatch_due_task, sweep_queue_task
from tests.factories import ClientFactory
from tests.sending.workers import wait_until, worker_pool

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EMAILS_PER_CLIENT = 40
CAP = 6


@pytest.fixture
def workers(tmp_path, sandbox):
    with worker_pool(
        tmp_path,
        sandbox,
        GMAIL_HTTP_TIMEOUT="2",  # the sandbox's injected latency (3 s) outlasts it
        SEND_LEASE_SECONDS="20",
        SEND_UNKNOWN_RESOLVE_DELAY_SECONDS="4",  # after the hung request has been stored
        SEND_RETRY_BASE_SECONDS="1",
    ) as running:
        yield running


def enqueue(client, n: int, subject: str) -> None:
    enqueue_email(
        request=SendRequest(
            client_id=client.pk,
            lead_id=uuid.uuid4(),
            recipient_email=f"lead{n}-{uuid.uuid4().hex[:6]}@prospect.test",
            subject=subject,
            body_html=f"<p>Hello {n}</p>",
            sequence_number=1,
        )
    )


def test_workers_killed_while_gmail_fails_a_fifth_of_sends_leave_every_email_sent_exactly_once(sandbox, workers):
    clients = [ClientFactory(name=f"Client {i}") for i in range(3)]
    for i, client in enumerate(clients):
        for n in range(3):
            connect_sandbox_mailbox(sandbox, client=client, email=f"box{n}@client{i}.test")
    capped_client = ClientFactory(name="Capped")
    connect_sandbox_mailbox(sandbox, client=capped_client, email="capped@capped.test", daily_limit=CAP)
    for n in range(EMAILS_PER_CLIENT):
        for client in clients:
            enqueue(client, n, f"Hello {n}")
    for n in range(10):
        enqueue(capped_client, n, "Hi")
    assert EmailSendQueue.objects.count() == 3 * EMAILS_PER_CLIENT + 10

    arm_faults(sandbox, probability=0.2, latency=3.0, retry_in=1.0, seed=8)
    workers.start(3, concurrency=2)
    rng = random.Random(8)
    kills, next_kill, started = 0, time.monotonic() + 4, time.monotonic()

    def tick():
        nonlocal kills, next_kill
        if kills < 2 and time.monotonic() >= next_kill:  # SIGKILL a random live worker, start another
            workers.kill(rng.choice([p for p in workers.procs if p.poll() is None]))
            workers.start(1, concurrency=2)
            kills, next_kill = kills + 1, time.monotonic() + 2
        if int(time.monotonic() - started) % 3 == 0:
            arm_faults(sandbox, probability=0.2, latency=3.0, retry_in=1.0)  # keep the 429's retry time near
        sweep_queue_task.delay()
        dispatch_due_task.delay()

    settled = wait_until(lambda: unsettled(capped={"capped@capped.test"}) == 0, timeout=80, interval=1, tick=tick)
    time.sleep(1)  # anything in flight lands
    verdict = verify(sandbox, capped={"capped@capped.test"}, latency=3.0)
    report = "\n".join([*verdict.lines(), *verdict.problems, *map(str, unsettled_rows())])
    assert settled, f"{report}\n{workers.logs()[-3000:]}"
    assert kills == 2
    assert verdict.ok, f"{verdict.problems}\n{report}"
    assert verdict.duplicates == 0 and verdict.lost == 0
    assert verdict.sent == 3 * EMAILS_PER_CLIENT + CAP - sum(verdict.failed.values())
    assert verdict.held_by_cap == 10 - CAP
    applied = faults_by_kind(sandbox)
    assert all(applied[kind] > 0 for kind in FAULT_MIX), applied
    call_command("verify_rollups")  # raises CommandError on any drift
