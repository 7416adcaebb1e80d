"""Benchmark the tracking drain: how many buffered hits per second reach EmailEvent and the rollups.

    python -m bench.tracking.drain [--hits 20000] [--drains 1 2 4]

For each number of drains: buffers `--hits` hits exactly as the endpoints do (70% opens, 30%
clicks, a tenth of them from scanners, over 1,000 messages of one client), starts that many drain
processes (what parallel `drain-tracking-events` tasks on Celery workers do), and times them until
the buffer is empty. Then checks that every hit is one event and that `verify_rollups` finds no drift.
Uses the same database and Redis as `bench.tracking.run`.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

from bench.tracking.run import ENV, PYTHON, ROOT, ensure_database, prepare_data


def fill(count: int, pixel_tokens: list[str], link_tokens: list[str]) -> None:
    from email_service.models import EmailClickTracking
    from email_service.tracking import hits as tracking
    from email_service.tracking import machine

    client = tracking._redis()
    assert client is not None
    messages = dict(EmailClickTracking.objects.filter(token__in=link_tokens).values_list("token", "message_id"))
    rng = random.Random(5)
    agents = ["Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Safari/605.1.15"] * 9 + ["curl/8.5.0"]
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        ip = f"198.51.100.{rng.randrange(1, 250)}"
        facts = machine.HitFacts(method="GET", user_agent=rng.choice(agents), ip=ip, prefetch=False)
        if rng.random() < 0.7:
            pipe.xadd(tracking.stream_key(), tracking._hit_fields("o", rng.choice(pixel_tokens), facts))  # type: ignore[arg-type]
        else:
            token = rng.choice(link_tokens)
            fields = tracking._hit_fields("c", token, facts, message_id=str(messages[token]))
            pipe.xadd(tracking.stream_key(), fields)  # type: ignore[arg-type]
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()


WORKER = """
import django, sys
django.setup()
from email_service.tracking.hits import drain_tracking_events
while drain_tracking_events(settle_seconds=0, batch_size=int(sys.argv[1])).read:
    pass
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--drains", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ensure_database()
    pixel_tokens, link_tokens = prepare_data(1000)
    from email_service.events.rollups import actual_rollups, expected_rollups, rollup_differences
    from email_service.models import Client, EmailEvent

    owner = Client.objects.get(email="bench@bench.test")
    lines = []
    total = 0
    for drains in args.drains:
        fill(args.hits, pixel_tokens, link_tokens)
        before = EmailEvent.objects.filter(client=owner).exclude(dedupe_key__startswith="implied-open:").count()
        started = time.monotonic()
        workers = [subprocess.Popen([PYTHON, "-c", WORKER, str(args.batch)], cwd=ROOT, env=ENV) for _ in range(drains)]
        for worker in workers:
            worker.wait()
        seconds = time.monotonic() - started
        after = EmailEvent.objects.filter(client=owner).exclude(dedupe_key__startswith="implied-open:").count()
        total += args.hits
        line = f"| {drains} | {args.hits} | {after - before} | {seconds:.1f} s | {args.hits / seconds:.0f} |"
        print(line, flush=True)
        lines.append(line)
    differences = rollup_differences(
        expected=expected_rollups(client_id=owner.pk, tz_name=owner.timezone), actual=actual_rollups(client_id=owner.pk)
    )
    report = "\n".join(
        [
            f"Drain benchmark: {args.hits} buffered hits per run (70% opens, 30% clicks, 10% scanner user agents, "
            f"1,000 messages), batches of {args.batch}; {os.cpu_count()} CPUs shared with PostgreSQL and Redis; "
            f"load average before/after: {load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
            "| drains in parallel | hits | events recorded | time | hits/s |",
            "|---:|---:|---:|---:|---:|",
            *lines,
            "",
            f"- rollups after all runs: {'no drift (verify_rollups)' if not differences else differences[:5]}",
        ]
    )
    print("\n" + report)
    from pathlib import Path

    (Path(__file__).parent / "LAST_DRAIN_RUN.md").write_text(report + "\n")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    os.environ.update(ENV)
    main()
