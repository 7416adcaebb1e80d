"""Profile the send path in one process (no Celery): CPU and queries per sent email, and where they go.

    python bench/sending/profile_send.py --mailboxes 50 --emails 600 [--followups] [--top 40]

Uses the same database set-up as bench_sending.py (the database in DATABASE_URL is truncated).
The Google sandbox runs in this process's threads; the profile covers only the sending thread.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.sending import bench_sending as b  # sets Django up: import the project after it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument("--emails", type=int, default=600)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--no-profile", action="store_true", help="only measure this thread's CPU per email")
    args = parser.parse_args()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from email_service.models import EmailSendQueue
    from email_service.sending import dispatch
    from tests.sending.gmail import connect_mailbox, make_test_sandbox, point_settings_at
    from tests.sending.workers import purge_broker

    with make_test_sandbox() as sandbox:
        point_settings_at(settings, sandbox)
        b._reset()
        client = b._client("Profile")
        boxes = [connect_mailbox(sandbox, client=client, email=f"box{n}@prof.test") for n in range(args.mailboxes)]
        b._bulk_queue(client, boxes, args.emails)
        profiler = cProfile.Profile(time.thread_time)  # this thread's CPU only
        sent = 0
        cpu0, t0 = time.process_time(), time.monotonic()
        queries_per_sent: list[int] = []
        thread_cpu = 0.0
        sample: list[str] = []
        while sent < args.emails and time.monotonic() - t0 < 300:
            for box in boxes:
                with CaptureQueriesContext(connection) as queries:
                    turn_cpu = time.thread_time()
                    if not args.no_profile:
                        profiler.enable()
                    outcome = dispatch.run_mailbox_turn(mailbox_id=box.pk)
                    if not args.no_profile:
                        profiler.disable()
                    thread_cpu += time.thread_time() - turn_cpu
                if outcome == "sent":
                    sent += 1
                    queries_per_sent.append(len(queries))
                    sample = sample or [q["sql"][:160] for q in queries.captured_queries]
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        done = EmailSendQueue.objects.filter(status="sent").count()
        purge_broker()
    print(f"sent {done} in {wall:.1f}s; process CPU {cpu * 1000 / max(done, 1):.1f} ms/email (incl. sandbox threads)")
    print(f"queries per sent email (turn that sent): mean {sum(queries_per_sent) / max(len(queries_per_sent), 1):.1f}")
    print(f"sending thread CPU per sent email (all turns): {thread_cpu * 1000 / max(done, 1):.1f} ms")
    print("\n".join(sample))
    if args.no_profile:
        return
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
