"""One turn task serves a group of mailboxes for a few seconds: every slot still paced, capped and claimed once."""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import json
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from email_service.models import EmailClickTracking, EmailSendQueue, EmailTrackingPixel, Mailbox
from email_service.sending import dispatch
from email_service.sending.message_builder import build_message
from tests.factories import EmailSendQueueFactory
from tests.sending.gmail import connect_mailbox, make_test_sandbox, point_settings_at
from tests.sending.workers import purge_broker

pytestmark = pytest.mark.django_db


@pytest.fixture
def sandbox(settings):
    purge_broker()
    with make_test_sandbox() as running:
        point_settings_at(settings, running)
        yield running
    purge_broker()


def queue(mailbox, count):
    return [EmailSendQueueFactory(client=mailbox.client, mailbox=mailbox) for _ in range(count)]


def turn_key(mailbox):
    return f"oree:send-turn:{mailbox.pk}"


def published_turns():
    """The `send_turns` tasks waiting in the broker, as their mailbox-id lists."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    groups = []
    for raw in broker.lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "email_service.send_turns":
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            groups.append(args[0])
    return groups


def test_one_turn_task_sends_every_due_email_of_its_mailboxes_each_at_its_pace(sandbox, alice):
    boxes = [connect_mailbox(sandbox, client=alice, email=f"box{n}@alice.test") for n in range(2)]
    rows = [row for box in boxes for row in queue(box, 3)]

    outcomes = dispatch.run_turns(mailbox_ids=[box.pk for box in boxes], budget_seconds=10)

    assert outcomes["sent"] == 6
    assert set(EmailSendQueue.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", flat=True)) == {"sent"}
    for box in boxes:
        assert len(sandbox.sent_messages(box.email)) == 3
        starts = sorted(EmailSendQueue.objects.filter(mailbox=box).values_list("send_started_at", flat=True))
        interval = 1 / min(box.max_sends_per_second, settings.MAILBOX_MAX_SENDS_PER_SECOND)
        assert min((b - a).total_seconds() for a, b in itertools.pairwise(starts)) >= 0.9 * interval - 1e-6
        # Nothing left: the mailbox leaves the group and the dispatcher may start it again later.
        assert cache.get(turn_key(box)) is None
    assert published_turns() == []


def test_when_the_budget_runs_out_the_group_goes_on_as_one_new_turn_task(sandbox, alice):
    busy = connect_mailbox(sandbox, client=alice, email="busy@alice.test", max_sends_per_second=2)
    idle = connect_mailbox(sandbox, client=alice, email="idle@alice.test")
    queue(busy, 10)

    outcomes = dispatch.run_turns(mailbox_ids=[busy.pk, idle.pk], budget_seconds=0.8)

    # 2/s over 0.8 s: the slot at once and at most two more; the rest wait for the next task.
    sent = EmailSendQueue.objects.filter(mailbox=busy, status="sent").count()
    assert 1 <= sent <= 3 and outcomes["sent"] == sent
    assert EmailSendQueue.objects.filter(mailbox=busy, status="queued").count() == 10 - sent
    assert published_turns() == [[str(busy.pk)]]
    assert cache.get(turn_key(busy)) is not None and cache.get(turn_key(idle)) is None
    # The pending turn keeps the beat from starting a second one for the busy mailbox.
    assert dispatch.dispatch_due() == 0


def test_a_mailbox_reaching_its_daily_cap_rests_while_its_group_goes_on(sandbox, alice):
    capped = connect_mailbox(sandbox, client=alice, email="capped@alice.test", daily_limit=1)
    other = connect_mailbox(sandbox, client=alice, email="other@alice.test")
    queue(capped, 3)
    queue(other, 2)

    outcomes = dispatch.run_turns(mailbox_ids=[capped.pk, other.pk], budget_seconds=10)

    assert outcomes["sent"] == 3 and outcomes["daily_cap"] == 1
    assert len(sandbox.sent_messages("capped@alice.test")) == 1
    assert len(sandbox.sent_messages("other@alice.test")) == 2
    assert cache.get(turn_key(capped)) == "rest"
    assert EmailSendQueue.objects.filter(mailbox=capped, status="queued").count() == 2


def test_the_dispatcher_spreads_many_due_mailboxes_over_groups_and_few_over_one_each(sandbox, alice):
    assert [dispatch.turn_group_size(n) for n in (1, 2, 16, 17, 40, 200, 5000)] == [1, 1, 1, 2, 3, 8, 8]
    boxes = [connect_mailbox(sandbox, client=alice, email=f"b{n}@alice.test") for n in range(20)]
    for box in boxes:
        queue(box, 1)

    assert dispatch.dispatch_due() == 20

    groups = published_turns()
    assert sorted(len(group) for group in groups) == [2] * 10
    assert sorted(itertools.chain.from_iterable(groups)) == sorted(str(box.pk) for box in boxes)
    assert dispatch.dispatch_due() == 0  # every mailbox has its turn pending


def test_a_group_keeps_its_mailbox_copy_but_a_pause_or_a_lower_limit_holds_at_the_next_slot(sandbox, alice):
    """run_turns reuses each mailbox's copy between turns; the pacing statement reads the rows."""
    paused = connect_mailbox(sandbox, client=alice, email="paused@alice.test")
    lowered = connect_mailbox(sandbox, client=alice, email="lowered@alice.test")
    queue(paused, 4)
    queue(lowered, 4)
    changed = []

    def sleep_and_change(seconds):
        # Between turns, after each mailbox sent once: an operator pauses one and lowers the other.
        if not changed:
            Mailbox.objects.filter(pk=paused.pk).update(status=Mailbox.Status.PAUSED)
            Mailbox.objects.filter(pk=lowered.pk).update(daily_limit=2)
            changed.append(True)
        time.sleep(seconds)

    outcomes = dispatch.run_turns(mailbox_ids=[paused.pk, lowered.pk], budget_seconds=10, sleep=sleep_and_change)

    assert changed
    assert len(sandbox.sent_messages("paused@alice.test")) == 1
    assert len(sandbox.sent_messages("lowered@alice.test")) == 2
    assert outcomes["mailbox_not_sending"] == 1 and outcomes["daily_cap"] == 1 and outcomes["sent"] == 3
    assert cache.get(turn_key(paused)) is None and cache.get(turn_key(lowered)) == "rest"


def test_the_first_claim_builds_fresh_and_a_retry_rebuilds_with_the_same_tokens(sandbox, alice):
    box = connect_mailbox(sandbox, client=alice, email="retry@alice.test")
    [row] = [EmailSendQueueFactory(client=alice, mailbox=box, body_html='<p><a href="https://a.example/x">x</a></p>')]

    first = dispatch.claim_next_email(mailbox_id=box.pk, worker="w1")
    assert first.claim is not None and first.claim.fresh
    message_id = first.claim.email.message_id
    assert message_id.startswith(f"<{row.pk.hex}.") and message_id.endswith("@alice.test>")
    with CaptureQueriesContext(connection) as queries:
        built = build_message(email=first.claim.email, mailbox=box, fresh=True)
    assert len(queries) == 1  # the pixel and the link, one INSERT, no lookups
    tokens = sorted(EmailClickTracking.objects.filter(message=row).values_list("token", flat=True))
    pixel = EmailTrackingPixel.objects.get(message=row).token

    # The attempt's outcome was unknown and it never left: queued again, due now, same Message-ID.
    EmailSendQueue.objects.filter(pk=row.pk).update(status="queued", next_attempt_at=timezone.now())
    Mailbox.objects.filter(pk=box.pk).update(next_send_at=None)
    again = dispatch.claim_next_email(mailbox_id=box.pk, worker="w2")
    assert again.claim is not None and not again.claim.fresh
    assert again.claim.email.message_id == message_id and again.claim.email.attempts == 2
    rebuilt = build_message(email=again.claim.email, mailbox=box, fresh=again.claim.fresh)
    assert sorted(EmailClickTracking.objects.filter(message=row).values_list("token", flat=True)) == tokens
    assert EmailTrackingPixel.objects.get(message=row).token == pixel
    assert html_part(rebuilt.raw) == html_part(built.raw)
    assert all(token in html_part(built.raw) for token in [*tokens, pixel])


def html_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_a_turn_lost_with_its_worker_is_taken_over_after_the_grace_not_the_keys_ttl(sandbox, alice):
    box = connect_mailbox(sandbox, client=alice, email="lost@alice.test")
    queue(box, 2)
    now = timezone.now()
    assert dispatch.dispatch_due(now=now) == 1
    purge_broker()  # the worker that had prefetched the turn task was SIGKILLed: the task is gone

    # Within the grace the turn may merely be late: no second chain.
    assert dispatch.dispatch_due(now=now + timedelta(seconds=dispatch.TURN_START_GRACE_SECONDS - 2)) == 0
    assert published_turns() == []
    # Past it, long before the key's TTL (60 s and more), the mailbox is started again.
    assert dispatch.dispatch_due(now=now + timedelta(seconds=dispatch.TURN_START_GRACE_SECONDS + 2)) == 1
    assert published_turns() == [[str(box.pk)]]


def test_a_turn_task_whose_chain_was_taken_over_drops_the_mailbox_and_the_new_chain_sends(sandbox, alice):
    box = connect_mailbox(sandbox, client=alice, email="chains@alice.test")
    queue(box, 1)
    dispatch.schedule_turns(mailbox_ids=[box.pk], at=timezone.now(), chain="old")
    dispatch.schedule_turns(mailbox_ids=[box.pk], at=timezone.now(), force=True, chain="new")

    late = dispatch.run_turns(mailbox_ids=[str(box.pk)], chain="old", budget_seconds=5)
    assert late == {"taken_over": 1}
    assert sandbox.sent_messages("chains@alice.test") == []

    current = dispatch.run_turns(mailbox_ids=[str(box.pk)], chain="new", budget_seconds=5)
    assert current["sent"] == 1 and "taken_over" not in current
    assert len(sandbox.sent_messages("chains@alice.test")) == 1
