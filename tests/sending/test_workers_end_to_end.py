"""Real worker processes drain the queue against the sandbox: once each, paced, capped, sticky, threaded."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter, defaultdict

import pytest

from email_service.models import EmailSendQueue, LeadMailboxAssignment
from email_service.sending.enqueue import SendRequest, enqueue_email
from email_service.sending.pacing import PACE_SLACK
from email_service.tasks import dispatch_due_task, sweep_queue_task
from google_sandbox.models import FAULT_LATENCY, OP_GET, OP_SEND, OP_TOKEN_REFRESH
from tests.factories import ClientFactory
from tests.sending.gmail import connect_mailbox
from tests.sending.workers import wait_until, worker_pool

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RATE = 2.5


@pytest.fixture
def workers(tmp_path, sandbox):
    settings = {"SEND_LEASE_SECONDS": "20", "SEND_UNKNOWN_RESOLVE_DELAY_SECONDS": "1", "SEND_RETRY_BASE_SECONDS": "1"}
    with worker_pool(tmp_path, sandbox, GMAIL_HTTP_TIMEOUT="10", **settings) as running:
        yield running


def request(client, lead_id, email, step, subject):
    return SendRequest(
        client_id=client.pk,
        lead_id=lead_id,
        recipient_email=email,
        subject=subject,
        body_html=f"<p>Step {step} for {email}</p>",
        sequence_number=step,
    )


def sent_count():
    return EmailSendQueue.objects.filter(status="sent").count()


def test_four_workers_send_every_email_once_paced_capped_sticky_and_threaded(sandbox, workers):
    sandbox.add_fault(OP_SEND, FAULT_LATENCY, count=None, latency=0.02)
    clients = [ClientFactory(name=f"Client {i}") for i in range(3)]
    mailboxes = [
        connect_mailbox(sandbox, client=client, email=f"box{i}-{n}@client{i}.test")
        for i, client in enumerate(clients)
        for n in range(4)
    ]
    capped_client = ClientFactory(name="Capped")
    capped = connect_mailbox(sandbox, client=capped_client, email="capped@capped.test", daily_limit=6)
    leads: list[tuple] = []
    for n in range(120):
        client = clients[n % 3]
        lead_id, address = uuid.uuid4(), f"lead{n}@prospect.test"
        leads.append((client, lead_id, address))
        enqueue_email(request=request(client, lead_id, address, 1, f"Hello lead {n}"))
        enqueue_email(request=request(client, lead_id, address, 2, ""))  # follow-up, same thread
        if n % 2 == 0:
            enqueue_email(request=request(client, lead_id, address, 3, f"A new topic {n}"))  # new thread
    for n in range(10):
        enqueue_email(request=request(capped_client, uuid.uuid4(), f"c{n}@prospect.test", 1, "Hi"))
    expected = EmailSendQueue.objects.exclude(mailbox=capped).count()
    assert expected == 120 * 2 + 60

    workers.start(4, concurrency=2)
    done = wait_until(
        lambda: sent_count() >= expected + 6,
        timeout=150,
        interval=1,
        tick=lambda: dispatch_due_task.delay(),  # stands in for beat
    )
    time.sleep(2)  # anything in flight lands
    assert done, f"only {sent_count()} of {expected + 6} sent\n{workers.logs()}"

    # From what the sandbox received: no email twice, none missing.
    received = {box.email: sandbox.sent_messages(box.email) for box in [*mailboxes, capped]}
    queue_ids = Counter(m.header("X-Oree-Queue-Id") for msgs in received.values() for m in msgs)
    assert max(queue_ids.values()) == 1
    sent_rows = {str(pk) for pk in EmailSendQueue.objects.filter(status="sent").values_list("pk", flat=True)}
    assert set(queue_ids) == sent_rows
    assert EmailSendQueue.objects.exclude(mailbox=capped).exclude(status="sent").count() == 0

    # The capped mailbox sent exactly its cap; the rest wait with a visible state.
    assert len(received["capped@capped.test"]) == 6
    assert EmailSendQueue.objects.filter(mailbox=capped, status="queued").count() == 4

    # No mailbox above its pace. Our side, exactly: the slots the atomic statement granted (the
    # claim time of each row) are >= 0.9/rate apart, and n slots span at least (n - 1 - 0.1) intervals
    # (the first slot's successor may come 0.9 interval after it; every later one a whole interval),
    # so any T seconds hold at most floor((T + 0.1/rate) x rate) + 1. The sandbox's side, through the
    # noise of two busy cores (one send may reach it up to an interval late, next to its successor):
    # at most floor(T x rate) + 2 arrivals in any 4 s — a mailbox at twice its pace would show ~21.
    for box in mailboxes:
        starts = sorted(EmailSendQueue.objects.filter(mailbox=box).values_list("send_started_at", flat=True))
        assert min((b - a).total_seconds() for a, b in itertools.pairwise(starts)) >= (1 - PACE_SLACK) / RATE - 1e-6
        span = (starts[-1] - starts[0]).total_seconds()
        assert len(starts) - 1 <= (span + PACE_SLACK / RATE) * RATE + 1e-6
    for msgs in received.values():
        times = sorted(m.received_at for m in msgs)
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t < start + 4.0) <= int(4.0 * RATE) + 2

    # Every lead on one mailbox, the one its assignment names.
    by_recipient = defaultdict(set)
    for address, msgs in received.items():
        for m in msgs:
            by_recipient[m.header("To")].add(address)
    assignments = {
        str(a.lead.email): a.mailbox.email for a in LeadMailboxAssignment.objects.select_related("lead", "mailbox")
    }
    for recipient, senders in by_recipient.items():
        assert senders == {assignments[recipient]}

    # Follow-ups threaded: step 2 replies to step 1 in its thread; step 3 (new subject) starts another.
    rows = {str(r.pk): r for r in EmailSendQueue.objects.filter(status="sent")}
    by_step = {}
    for msgs in received.values():
        for m in msgs:
            row = rows[m.header("X-Oree-Queue-Id")]
            by_step[(row.lead_id, row.sequence_number)] = m
    for _client, lead_id, _address in leads:
        one, two = by_step[(lead_id, 1)], by_step[(lead_id, 2)]
        assert two.thread_id == one.thread_id
        assert two.header("In-Reply-To") == one.message_id
        assert two.header("References") == one.message_id
        assert two.header("Subject") == f"Re: {one.header('Subject')}"
        if (lead_id, 3) in by_step:
            three = by_step[(lead_id, 3)]
            assert three.thread_id != one.thread_id and three.header("In-Reply-To") is None
            assert three.received_at > two.received_at


def test_a_worker_killed_mid_send_leaves_each_email_exactly_once_and_every_row_sent(sandbox, workers):
    client = ClientFactory()
    accepted_box = connect_mailbox(sandbox, client=client, email="accepted@client.test")
    early_box = connect_mailbox(sandbox, client=client, email="early@client.test", expired=True)
    # After Gmail stored the message, its read-back hangs: the worker dies before our DB records it.
    sandbox.add_fault(OP_GET, FAULT_LATENCY, count=1, mailbox="accepted@client.test", latency=60)
    # The token refresh before the send hangs: the worker dies before the request left.
    sandbox.add_fault(OP_TOKEN_REFRESH, FAULT_LATENCY, count=1, mailbox="early@client.test", latency=60)
    first = enqueue_email(request=request(client, uuid.uuid4(), "one@prospect.test", 1, "Hi")).email
    LeadMailboxAssignment.objects.filter(lead_id=first.lead_id).update(mailbox=accepted_box)
    EmailSendQueue.objects.filter(pk=first.pk).update(mailbox=accepted_box)
    second = enqueue_email(request=request(client, uuid.uuid4(), "two@prospect.test", 1, "Hi")).email
    LeadMailboxAssignment.objects.filter(lead_id=second.lead_id).update(mailbox=early_box)
    EmailSendQueue.objects.filter(pk=second.pk).update(mailbox=early_box)

    [doomed] = workers.start(1, pool="threads", concurrency=4)
    stuck = wait_until(
        lambda: (
            len(sandbox.sent_messages("accepted@client.test")) == 1
            and sandbox.faults_applied(op=OP_GET, kind=FAULT_LATENCY) == 1
            and sandbox.faults_applied(op=OP_TOKEN_REFRESH, kind=FAULT_LATENCY) == 1
        ),
        timeout=40,
        tick=lambda: dispatch_due_task.delay(),
    )
    assert stuck, workers.logs()
    assert sandbox.sent_messages("early@client.test") == []
    assert set(EmailSendQueue.objects.values_list("status", flat=True)) == {"sending"}
    workers.kill(doomed)

    workers.start(1, concurrency=2)
    recovered = wait_until(
        lambda: sent_count() == 2,
        timeout=90,
        interval=1,
        tick=lambda: (sweep_queue_task.delay(), dispatch_due_task.delay()),
    )
    assert recovered, f"{list(EmailSendQueue.objects.values_list('status', 'status_reason'))}\n{workers.logs()}"
    for box, row in (("accepted@client.test", first), ("early@client.test", second)):
        [message] = sandbox.sent_messages(box)
        row.refresh_from_db()
        assert message.header("X-Oree-Queue-Id") == str(row.pk)
        assert (row.status, row.gmail_message_id) == ("sent", message.gmail_id)
