"""What the fault-injection run and its short test share: the fault mix, the mailboxes, and the verdict.

Works with either face of the Google sandbox: the in-process `GoogleSandbox` (tests) or
`SandboxControl` over HTTP (the bench); both have the same methods.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count

from email_service.gmail.client import QUEUE_ID_HEADER, MailboxCredentials
from email_service.models import Client, EmailSendQueue, Mailbox
from google_sandbox.models import (
    FAULT_ACCEPT_THEN_CLOSE,
    FAULT_ACCEPT_THEN_RESET,
    FAULT_LATENCY,
    FAULT_RATE_LIMIT,
    FAULT_UNAVAILABLE,
    OP_SEND,
)
from google_sandbox.testing import TEST_SCOPES

FAULT_MIX = (FAULT_RATE_LIMIT, FAULT_UNAVAILABLE, FAULT_LATENCY, FAULT_ACCEPT_THEN_CLOSE, FAULT_ACCEPT_THEN_RESET)
"""The sandbox's answers to a faulty send, drawn uniformly: 429, 503, a hang past the client's
timeout (the message is stored after it), and "stored, then the connection dropped" (FIN / RST)."""

PERMANENT_FAILURE_REASONS = {
    # The fifth transient failure in a row (dispatch.MAX_SEND_ATTEMPTS): only 429/503 before the
    # request reached Google count, so at a 20% fault rate this is (0.2 x 2/5)^5, about 1 in 10^5.
    "too_many_attempts",
}
"""Why a row may end `failed` in these runs and still be correct: Gmail did not take it, on record."""


def arm_faults(sandbox: Any, *, probability: float, latency: float, retry_in: float, seed: int | None = None) -> None:
    """Each send gets `probability` of one fault of FAULT_MIX; a 429 says "retry `retry_in` seconds from now"."""
    retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_in)
    sandbox.set_random_faults(
        probability,
        list(FAULT_MIX),
        op=OP_SEND,
        latency=latency,
        retry_at=retry_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        seed=seed,
    )


def connect_sandbox_mailbox(sandbox: Any, *, client: Client, email: str, **fields: Any) -> Mailbox:
    """A connected mailbox of `client` holding real (encrypted) sandbox tokens, as the OAuth callback leaves it."""
    from django.utils import timezone

    from email_service.mailboxes.credentials import store_credentials

    sandbox.add_account(email, email.split("@")[0].title())
    tokens = sandbox.issue_tokens(email, TEST_SCOPES)
    mailbox = Mailbox.objects.create(
        client=client, email=email, display_name=email.split("@")[0].title(), connected_at=timezone.now(), **fields
    )
    store_credentials(
        mailbox=mailbox,
        credentials=MailboxCredentials(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            expiry=timezone.now() + dt.timedelta(seconds=int(tokens["expires_in"])),
            scopes=tuple(tokens["scope"].split()),
        ),
    )
    return mailbox


def faults_by_kind(sandbox: Any) -> dict[str, int]:
    counts = Counter(f.kind for f in sandbox.fault_log() if f.op == OP_SEND)
    return {kind: counts.get(kind, 0) for kind in FAULT_MIX}


def unsettled(*, capped: set[str]) -> int:
    """Rows still to go: anything not sent/failed, except rows a capped mailbox is holding for tomorrow."""
    pending = EmailSendQueue.objects.exclude(status__in=[EmailSendQueue.Status.SENT, EmailSendQueue.Status.FAILED])
    left = pending.exclude(mailbox__email__in=capped).count()
    for email in capped:
        box = Mailbox.objects.get(email=email)
        sent = EmailSendQueue.objects.filter(mailbox=box, status=EmailSendQueue.Status.SENT).count()
        if sent < box.daily_limit:
            left += pending.filter(mailbox=box).count()
    return left


@dataclass
class Verdict:
    emails: int
    sent: int
    received: int
    duplicates: int
    lost: int
    unexpected_in_sandbox: int
    failed: dict[str, int]
    not_settled: dict[str, int]
    held_by_cap: int
    pace_violations: list[str] = field(default_factory=list)
    cap_violations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [
            f"emails enqueued: {self.emails}",
            f"sent (rows): {self.sent}",
            f"received by the sandbox: {self.received}",
            f"duplicates: {self.duplicates}",
            f"lost: {self.lost}",
            f"in the sandbox without a sent row: {self.unexpected_in_sandbox}",
            f"failed: {sum(self.failed.values())} {dict(self.failed) or ''}".rstrip(),
            f"held by the capped mailbox's cap (queued for tomorrow): {self.held_by_cap}",
            f"not settled: {sum(self.not_settled.values())} {dict(self.not_settled) or ''}".rstrip(),
            f"pace violations: {len(self.pace_violations)}",
            f"cap violations: {len(self.cap_violations)}",
        ]


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def arrival_times(send_times: list[float], latency_faults: list[float], latency: float) -> list[float]:
    """When each accepted send reached the sandbox: a send held by an injected latency is stored
    `latency` seconds after it arrived, so its stored time moves back to the fault's arrival time."""
    times = sorted(send_times)
    for arrived in sorted(latency_faults):
        stored = arrived + latency
        if times:
            nearest = min(range(len(times)), key=lambda i: abs(times[i] - stored))
            if abs(times[nearest] - stored) < 0.5:
                times[nearest] = arrived
    return sorted(times)


def unsettled_rows(limit: int = 10) -> list[tuple[Any, ...]]:
    """The first rows not sent or failed, with what they are waiting for (for failure messages)."""
    return list(
        EmailSendQueue.objects.exclude(status__in=[EmailSendQueue.Status.SENT, EmailSendQueue.Status.FAILED])
        .order_by("updated_at")
        .values_list("mailbox__email", "status", "status_reason", "attempts", "lease_expires_at", "next_attempt_at",
                     "last_error")[:limit]
    )  # fmt: skip


def verify(sandbox: Any, *, capped: set[str], latency: float, pace_window: float = 4.0) -> Verdict:
    """Judge the run from PostgreSQL and from what the sandbox received."""
    rows = dict(EmailSendQueue.objects.values_list("pk", "status"))
    by_id = {str(pk): status for pk, status in rows.items()}
    statuses = Counter(rows.values())
    received: Counter[str] = Counter()
    problems: list[str] = []
    pace_violations: list[str] = []
    cap_violations: list[str] = []
    latency_faults: dict[str | None, list[float]] = {}
    for fault in sandbox.fault_log():
        if fault.op == OP_SEND and fault.kind == FAULT_LATENCY:
            latency_faults.setdefault(fault.mailbox, []).append(fault.at)
    for box in Mailbox.objects.all():
        messages = sandbox.sent_messages(box.email)
        received.update(m.header(QUEUE_ID_HEADER) for m in messages)
        # Pace, from the sandbox's clock: at most floor(T x rate) + 1 arrivals in any T seconds.
        times = arrival_times(sandbox.send_times(box.email), latency_faults.get(box.email, []), latency)
        allowed = math.floor(pace_window * box.max_sends_per_second) + 1
        worst = max_in_window(times, pace_window)
        if worst > allowed:
            pace_violations.append(f"{box.email}: {worst} sends in {pace_window:g} s (allowed {allowed})")
        if len(messages) > box.daily_limit:
            cap_violations.append(f"{box.email}: {len(messages)} sent, cap {box.daily_limit}")
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    sent_ids = {pk for pk, status in by_id.items() if status == EmailSendQueue.Status.SENT}
    sent_not_received = len(sent_ids - set(received))  # a row says sent, Gmail never saw it
    unexpected = len(set(received) - sent_ids)  # Gmail has it, our row does not say so
    failed = dict(
        EmailSendQueue.objects.filter(status=EmailSendQueue.Status.FAILED)
        .values_list("status_reason")
        .annotate(n=Count("pk"))
        .values_list("status_reason", "n")
    )
    pending = EmailSendQueue.objects.exclude(status__in=[EmailSendQueue.Status.SENT, EmailSendQueue.Status.FAILED])
    held_rows = pending.filter(mailbox__email__in=capped, status=EmailSendQueue.Status.QUEUED)
    held = held_rows.count()
    # Lost: enqueued, never reached Gmail, and not accounted for by a failure on record or the cap.
    accounted = {str(pk) for pk in held_rows.values_list("pk", flat=True)} | {
        pk for pk, status in by_id.items() if status == EmailSendQueue.Status.FAILED
    }
    lost = len(set(by_id) - set(received) - accounted)
    not_settled = dict(
        pending.exclude(mailbox__email__in=capped)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    for email in capped:
        box = Mailbox.objects.get(email=email)
        if len(sandbox.sent_messages(email)) != box.daily_limit:
            problems.append(f"capped mailbox {email} sent {len(sandbox.sent_messages(email))}, cap {box.daily_limit}")
    if duplicates:
        problems.append(f"{duplicates} duplicate sends")
    if lost:
        problems.append(f"{lost} emails lost (never reached the sandbox, no failure on record)")
    if sent_not_received:
        problems.append(f"{sent_not_received} rows marked sent that the sandbox never received")
    if unexpected:
        problems.append(f"{unexpected} messages in the sandbox whose row is not sent")
    if not_settled:
        problems.append(f"rows not settled: {not_settled}")
    if bad := {r: n for r, n in failed.items() if r not in PERMANENT_FAILURE_REASONS}:
        problems.append(f"failures without a documented permanent reason: {bad}")
    problems += pace_violations + cap_violations
    return Verdict(
        emails=len(rows),
        sent=statuses.get(EmailSendQueue.Status.SENT, 0),
        received=sum(received.values()),
        duplicates=duplicates,
        lost=lost,
        unexpected_in_sandbox=unexpected,
        failed=failed,
        not_settled=not_settled,
        held_by_cap=held,
        pace_violations=pace_violations,
        cap_violations=cap_violations,
        problems=problems,
    )
