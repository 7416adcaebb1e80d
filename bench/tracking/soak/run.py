"""Tracking soak: minutes of pixel and click traffic while the drain worker and Redis restart; nothing lost.

    flock /tmp/oree-bench.lock /work/main/.venv/bin/python -m bench.tracking.soak.run --duration 150

Runs its OWN PostgreSQL (5441) and Redis (6391) under /tmp (never the shared servers), gunicorn
(the deployment's gthread config) on loopback, one Celery worker and beat (the drain every 5 s).
A thread pool (bounded concurrency, keep-alive connections) sends a mix of people, link scanners
(Safe Links, Proofpoint, curl) and Apple Mail Privacy Protection fetches. One third in, Redis is
restarted; two thirds in, the drain worker is SIGKILLed and a new one started. Every answer is
checked (pixel: 200 and the PNG; known click: 302 to the stored destination), and once the drain
has caught up, the recorded events are compared with the requests sent, label by label.

Redis runs with `appendfsync always` by default (the tracking stream is the only copy of a hit
until the drain records it, so production Redis must persist it); `--no-aof` shows what a
Redis without persistence loses. See bench/tracking/soak/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bench.faults.run import (
    DB_NAME,
    PG_PORT,
    REDIS_DIR,
    REDIS_PORT,
    ROOT,
    free_port,
    restart_redis,
    start_postgres,
    start_redis,
    stop_postgres,
    stop_redis,
    wait_port,
)

DESTINATION = "https://client.test/pricing?plan=pro#annual"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@dataclass(frozen=True)
class Kind:
    """One kind of visitor: what it requests, how it presents itself, and the label we expect."""

    name: str
    target: str  # "open" | "click"
    user_agent: str
    weight: int
    is_machine: bool
    reason: str  # services.machine reason, "" for a person


KINDS = (
    Kind("person opens (Chrome)", "open", CHROME, 25, False, ""),
    Kind("person opens (Gmail image proxy)", "open", GMAIL_PROXY, 10, False, ""),
    Kind("Apple MPP fetch", "open", "Mozilla/5.0", 15, True, "apple_mpp"),
    Kind("curl fetches the pixel", "open", "curl/8.5.0", 5, True, "scanner_user_agent"),
    Kind("person clicks", "click", CHROME, 20, False, ""),
    Kind(
        "Safe Links scanner clicks",
        "click",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16) SafeLinks",
        10,
        True,
        "scanner_user_agent",
    ),
    Kind(
        "Proofpoint clicks", "click", "Mozilla/5.0 (compatible; Proofpoint URL Defense)", 10, True, "scanner_user_agent"
    ),
    Kind("curl clicks", "click", "curl/8.5.0", 5, True, "scanner_user_agent"),
)


class Load:
    """`threads` keep-alive clients, each request a random kind on a random message, until `stop`."""

    def __init__(self, port: int, pixels: list[str], links: list[str], threads: int, seed: int) -> None:
        self.port, self.pixels, self.links, self.threads, self.seed = port, pixels, links, threads, seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent: Counter[tuple[str, bool, str]] = Counter()  # (target, is_machine, reason) -> requests answered
        self.by_kind: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.latencies: list[float] = []

    def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        weights = [k.weight for k in KINDS]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            kind = rng.choices(KINDS, weights)[0]
            if kind.target == "open":
                path = f"/api/track/open/{rng.choice(self.pixels)}.png"
            else:
                path = f"/api/track/click/{rng.choice(self.links)}"
            started = time.monotonic()
            try:
                conn.request("GET", path, headers={"User-Agent": kind.user_agent})
                response = conn.getresponse()
                body = response.read()
                status, location = response.status, response.getheader("Location")
            except (OSError, http.client.HTTPException) as error:
                with self.lock:
                    self.bad[f"{kind.target}: {type(error).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            elapsed = time.monotonic() - started
            ok = (
                status == 200 and body.startswith(b"\x89PNG")
                if kind.target == "open"
                else status == 302 and location == DESTINATION
            )
            with self.lock:
                self.latencies.append(elapsed)
                if ok:
                    self.sent[(kind.target, kind.is_machine, kind.reason)] += 1
                    self.by_kind[kind.name] += 1
                else:
                    self.bad[f"{kind.target}: {status}"] += 1
        conn.close()

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.threads)]
        for thread in threads:
            thread.start()
        return threads


def prepare(count: int) -> tuple[list[str], list[str]]:
    """`count` messages sent a day ago, each with its pixel and one tracked link (cached as at send time)."""
    from django.utils import timezone

    from email_service.models import (
        Campaign,
        Client,
        EmailClickTracking,
        EmailSendQueue,
        EmailTrackingPixel,
        Lead,
        Mailbox,
    )
    from email_service.tracking import hits as tracking

    owner = Client.objects.create(name="Soak", email="soak@soak.test", password="!")
    campaign = Campaign.objects.filter(client=owner).first() or Campaign.objects.create(
        client=owner, name="Soak", is_default=True
    )
    mailbox = Mailbox.objects.create(client=owner, email="sender@soak.test")
    leads = Lead.objects.bulk_create(
        [Lead(id=uuid.uuid4(), client=owner, email=f"l{n}@soak.test") for n in range(count)]
    )
    sent_at = timezone.now() - timedelta(days=1)
    messages = EmailSendQueue.objects.bulk_create(
        [
            EmailSendQueue(
                client=owner,
                campaign=campaign,
                lead=lead,
                mailbox=mailbox,
                sequence_number=1,
                recipient_email=lead.email,
                body_html="<p>hi</p>",
                status="sent",
                sent_at=sent_at,
            )
            for lead in leads
        ]
    )
    pixels = EmailTrackingPixel.objects.bulk_create([EmailTrackingPixel(message=m) for m in messages])
    links = EmailClickTracking.objects.bulk_create([EmailClickTracking(message=m, url=DESTINATION) for m in messages])
    tracking.cache_links(links)
    return [p.token for p in pixels], [link.token for link in links]


def recorded() -> Counter[tuple[str, bool, str]]:
    """Events recorded from requests (a person's click's implied open excluded), by label."""
    from django.db.models import Count

    from email_service.models import EmailEvent

    rows = (
        EmailEvent.objects.filter(client__email="soak@soak.test", event_type__in=["open", "click"])
        .filter(detail__has_key="method")  # a request's event; an implied open has no method of its own
        .values_list("event_type", "is_machine", "machine_reason")
        .annotate(n=Count("pk"))
    )
    return Counter({(t, m, r or ""): n for t, m, r, n in rows})


def spawn(env: dict[str, str], logs: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def drain_worker(env: dict[str, str], logs: Path, n: int) -> subprocess.Popen[bytes]:
    return spawn(
        env,
        logs,
        f"worker-{n}",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "OreeStats",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            f"--hostname=soak{n}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
    )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of load")
    parser.add_argument("--threads", type=int, default=16, help="concurrent keep-alive clients")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--no-aof", action="store_true", help="Redis without persistence (shows what is lost)")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--logs", default="/tmp/oree-soak-logs")
    parser.add_argument("--record", help="write the figures as markdown to this file")
    args = parser.parse_args(argv)
    aof = not args.no_aof
    logs = Path(args.logs)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)

    start_postgres()
    start_redis(aof=aof)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "OreeStats.settings_test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/{DB_NAME}",
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "LOG_LEVEL": "WARNING",
        "TRACKING_FLUSH_MS": "10",  # the deployment's hit writer (settings_test writes each hit in its request)
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    procs: list[subprocess.Popen[bytes]] = []
    try:
        call_command("migrate", verbosity=0)
        pixels, links = prepare(args.messages)
        connection.close()
        port = free_port()
        procs.append(
            spawn(
                env,
                logs,
                "gunicorn",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "OreeStats.wsgi:application",
                    "--config",
                    "bench/tracking/gunicorn_bench.py",
                    "--bind",
                    f"127.0.0.1:{port}",
                ],
            )
        )
        procs.append(
            spawn(
                env,
                logs,
                "beat",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "OreeStats",
                    "beat",
                    "--loglevel=WARNING",
                    "--schedule",
                    str(logs / "beat-schedule"),
                ],
            )
        )
        worker = drain_worker(env, logs, 1)
        procs.append(worker)
        wait_port(port)

        load = Load(port, pixels, links, args.threads, args.seed)
        started = time.monotonic()
        threads = load.start()
        events: list[str] = []
        redis_done = worker_done = False
        while (elapsed := time.monotonic() - started) < args.duration:
            if not redis_done and elapsed >= args.duration / 3:
                seconds = restart_redis(aof=aof)
                events.append(f"Redis restarted at {elapsed:.0f}s (down {seconds:.1f}s)")
                redis_done = True
            if not worker_done and elapsed >= 2 * args.duration / 3:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
                worker = drain_worker(env, logs, 2)
                procs.append(worker)
                events.append(f"drain worker SIGKILLed and replaced at {elapsed:.0f}s")
                worker_done = True
            time.sleep(0.5)
        load.stop.set()
        for thread in threads:
            thread.join(timeout=15)
        load_seconds = time.monotonic() - started
        for line in events:
            print(line, flush=True)
        total = sum(load.sent.values())
        print(f"load done: {total} answered correctly in {load_seconds:.0f}s, bad answers {dict(load.bad)}", flush=True)

        # The drain (beat every 5 s on the worker) catches up; wait until the counts match or stop moving.
        settle_started = time.monotonic()
        got: Counter[tuple[str, bool, str]] = Counter()
        last_change, last_total = time.monotonic(), -1
        while time.monotonic() - settle_started < args.settle_timeout:
            got = recorded()
            if got == load.sent:
                break
            if sum(got.values()) != last_total:
                last_total, last_change = sum(got.values()), time.monotonic()
            elif time.monotonic() - last_change > 60:
                break
            time.sleep(2)
        settle_seconds = time.monotonic() - settle_started
        try:
            call_command("verify_rollups")
            rollups = "no drift"
        except Exception as error:  # CommandError on drift
            rollups = f"DRIFT: {error}"
        latencies = sorted(load.latencies)
        p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
        rows = []
        for key in sorted(set(load.sent) | set(got)):
            target, machine, reason = key
            label = f"{target} {'machine' if machine else 'person'}{f' ({reason})' if reason else ''}"
            rows.append(f"| {label} | {load.sent[key]} | {got[key]} | {got[key] - load.sent[key]:+d} |")
        equal = got == load.sent
        lines = [
            f"load: {load_seconds:.0f}s, {args.threads} keep-alive clients, {args.messages} messages "
            f"(a pixel and a link each); Redis {'appendfsync always' if aof else 'without persistence'}",
            *events,
            f"requests answered correctly: {total} ({total / load_seconds:.0f}/s, p99 {p99:.0f} ms); "
            f"other answers or errors: {sum(load.bad.values())} {dict(load.bad) or ''}".rstrip(),
            f"per visitor kind: {dict(load.by_kind)}",
            f"drain caught up {settle_seconds:.0f}s after the load; recorded == sent, label by label: {equal}",
            f"verify_rollups: {rollups}",
            "",
            "| label | requests | recorded events | difference |",
            "|---|---|---|---|",
            *rows,
        ]
        print("\n".join(lines), flush=True)
        if args.record:
            Path(args.record).write_text("\n".join(lines) + "\n")
        return 0 if equal and not load.bad and rollups == "no drift" else 1
    finally:
        stop_all(procs)
        connection.close()
        stop_redis()
        shutil.rmtree(REDIS_DIR, ignore_errors=True)
        stop_postgres()


if __name__ == "__main__":
    raise SystemExit(main())
