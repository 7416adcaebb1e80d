"""Fault-injection run: the whole system sends while workers die, Redis and PostgreSQL restart, Gmail fails.

    flock /tmp/oree-bench.lock /work/main/.venv/bin/python -m bench.faults.run --emails 2000

Starts its OWN PostgreSQL (port 5441) and Redis (port 6391) under /tmp (never the shared ones),
the Google sandbox (`manage.py google_sandbox`), gunicorn, N Celery workers and beat; enqueues
through `POST /api/email/send/batch`; the sandbox answers `--fault-rate` of sends with a mix of
429 (retry a few seconds later), 503, a hang past the client timeout, and accept-then-FIN/RST.
While the queue drains it SIGKILLs a random worker every `--kill-every` seconds (and starts a
replacement), restarts Redis once and PostgreSQL once. Then it waits for the queue to settle and
judges the run from the database and from what the sandbox received (bench/faults/harness.py).
Exit status 0 only when every check passed. See bench/faults/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_DIR = Path("/tmp/oree-faults-pg")
PG_PORT = 5441
REDIS_DIR = Path("/tmp/oree-faults-redis")
REDIS_PORT = 6391
DB_NAME = "oree_faults"
CLIENT_ID, CLIENT_SECRET = "faults-client.apps.googleusercontent.com", "faults-client-secret"
API_KEY = "faults-api-key-0123456789abcdef"
LATENCY = 3.0  # the injected hang; the client gives up after GMAIL_HTTP_TIMEOUT = 2 s
CAPPED = "capped@capped.test"
CAP = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


# ---------------------------------------------------------------- our own PostgreSQL and Redis


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def pg_ctl(*args: str) -> None:
    run("runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(PG_DIR / "data"), *args)


def start_postgres() -> None:
    shutil.rmtree(PG_DIR, ignore_errors=True)
    PG_DIR.mkdir(parents=True)
    shutil.chown(PG_DIR, "postgres")
    run(
        "runuser",
        "-u",
        "postgres",
        "--",
        str(PG_BIN / "initdb"),
        "-D",
        str(PG_DIR / "data"),
        "-U",
        "postgres",
        "--auth=trust",
    )
    pg_ctl("-o", f"-p {PG_PORT} -k /tmp -c max_connections=200", "-l", str(PG_DIR / "log"), "-w", "start")
    run(
        "runuser",
        "-u",
        "postgres",
        "--",
        str(PG_BIN.parent / "bin" / "createdb"),
        "-h",
        "127.0.0.1",
        "-p",
        str(PG_PORT),
        DB_NAME,
    )


def restart_postgres() -> float:
    started = time.monotonic()
    pg_ctl(
        "-o", f"-p {PG_PORT} -k /tmp -c max_connections=200", "-l", str(PG_DIR / "log"), "-w", "-m", "fast", "restart"
    )
    return time.monotonic() - started


def stop_postgres() -> None:
    pg_ctl("-m", "immediate", "-w", "stop")
    shutil.rmtree(PG_DIR, ignore_errors=True)


def start_redis(*, aof: bool = False) -> None:
    """No persistence by default (the broker and cache must survive losing everything); `aof`: appendfsync always."""
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    run(
        "redis-server",
        "--port",
        str(REDIS_PORT),
        "--save",
        "",
        *persistence,
        "--dir",
        str(REDIS_DIR),
        "--daemonize",
        "yes",
    )
    wait_port(REDIS_PORT)


def stop_redis() -> None:
    subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"], check=False, capture_output=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            return


def restart_redis(*, aof: bool = False) -> float:
    started = time.monotonic()
    stop_redis()
    start_redis(aof=aof)
    return time.monotonic() - started


# ---------------------------------------------------------------- the app's processes


class Stack:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_worker(self) -> None:
        self.count += 1
        self.workers.append(
            self.spawn(
                f"worker-{self.count}",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "OreeStats",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    f"--hostname=faults{self.count}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=WARNING",
                ],
            )
        )

    def restart_exited_workers(self) -> int:
        """What a process supervisor (systemd, the platform) does: start a worker for each one that exited."""
        exited = [p for p in self.workers if p.poll() is not None]
        for proc in exited:
            self.workers.remove(proc)
            self.start_worker()
        return len(exited)

    def kill_random_worker(self, rng: random.Random) -> None:
        alive = [p for p in self.workers if p.poll() is None]
        if not alive:
            return
        victim = rng.choice(alive)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.workers.remove(victim)

    def stop(self) -> None:
        procs = [p for p in self.workers + self.others if p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def post_batch(base: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{base}/api/email/send/batch",
        data=json.dumps({"emails": items}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    return list(body["results"] if isinstance(body, dict) else body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--mailboxes", type=int, default=20, help="connected mailboxes (4 clients), plus one capped")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--kill-every", type=float, default=8.0, help="seconds between worker SIGKILLs")
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--logs", default="/tmp/oree-faults-logs")
    parser.add_argument("--record", help="write the figures as markdown to this file")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    logs = Path(args.logs)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)

    start_postgres()
    start_redis()
    sandbox_port, web_port = free_port(), free_port()
    sandbox_base = f"http://127.0.0.1:{sandbox_port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "OreeStats.settings_test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/{DB_NAME}",
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "OREE_API_KEY": API_KEY,
        "GOOGLE_CLIENT_ID": CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "GOOGLE_AUTH_URI": f"{sandbox_base}/o/oauth2/auth",
        "GOOGLE_TOKEN_URI": f"{sandbox_base}/token",
        "GOOGLE_REVOKE_URI": f"{sandbox_base}/revoke",
        "GMAIL_API_ENDPOINT": f"{sandbox_base}/",
        "GMAIL_HTTP_TIMEOUT": "2",
        "SEND_LEASE_SECONDS": "20",
        "SEND_UNKNOWN_RESOLVE_DELAY_SECONDS": "4",
        "SEND_RETRY_BASE_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.utils import InterfaceError, OperationalError

    from bench.faults.harness import arm_faults, connect_sandbox_mailbox, faults_by_kind, unsettled, verify
    from email_service.dashboard.sessions import create_client
    from email_service.models import Client, EmailSendQueue
    from google_sandbox.control import SandboxControl

    stack = Stack(env, logs)
    t0 = time.monotonic()
    try:
        call_command("migrate", verbosity=0)
        stack.others.append(
            stack.spawn(
                "sandbox",
                [
                    sys.executable,
                    "manage.py",
                    "google_sandbox",
                    "--port",
                    str(sandbox_port),
                    "--client-id",
                    CLIENT_ID,
                    "--client-secret",
                    CLIENT_SECRET,
                ],
            )
        )
        wait_port(sandbox_port)
        sandbox = SandboxControl(sandbox_base)
        clients = [
            create_client(name=f"Client {i}", email=f"owner@client{i}.test", password=uuid.uuid4().hex)
            for i in range(4)
        ]
        for n in range(args.mailboxes):
            connect_sandbox_mailbox(sandbox, client=clients[n % 4], email=f"box{n}@client{n % 4}.test")
        capped_client = create_client(name="Capped", email="owner@capped.test", password=uuid.uuid4().hex)
        connect_sandbox_mailbox(sandbox, client=capped_client, email=CAPPED, daily_limit=CAP)
        stack.others.append(
            stack.spawn(
                "gunicorn",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "OreeStats.wsgi:application",
                    "--config",
                    "bench/tracking/gunicorn_bench.py",
                    "--bind",
                    f"127.0.0.1:{web_port}",
                ],
            )
        )
        stack.others.append(
            stack.spawn(
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
        for _ in range(args.workers):
            stack.start_worker()
        wait_port(web_port)
        connection.close()

        arm_faults(sandbox, probability=args.fault_rate, latency=LATENCY, retry_in=3, seed=args.seed)
        base = f"http://127.0.0.1:{web_port}"
        capped_emails = 2 * CAP
        items = []
        for n in range(args.emails):
            client: Client = capped_client if n < capped_emails else clients[n % 4]
            items.append(
                {
                    "lead_id": str(uuid.uuid4()),
                    "client_id": str(client.pk),
                    "recipient_email": f"lead{n}@prospect{n % 50}.test",
                    "email_subject": f"Quick question {n}",
                    "email_body": f"<p>Hi lead {n}, <a href='https://client.test/demo?n={n}'>the demo</a>.</p>",
                    "sequence_number": 1,
                }
            )
        enqueue_started = time.monotonic()
        statuses: Counter[int] = Counter()
        enqueue_retries = 0
        enqueue_seconds = 0.0

        def enqueue() -> None:
            """n8n's side: batches of 100; a batch that fails (Redis/PostgreSQL restarting) is sent again."""
            nonlocal enqueue_retries, enqueue_seconds
            for start in range(0, len(items), 100):
                while True:
                    try:
                        results = post_batch(base, items[start : start + 100])
                        break
                    except (OSError, ValueError, KeyError):  # connection refused/reset, 5xx, bad JSON
                        enqueue_retries += 1
                        time.sleep(1)
                statuses.update(result["status"] for result in results)
            enqueue_seconds = time.monotonic() - enqueue_started
            print(f"enqueued {len(items)} in {enqueue_seconds:.1f}s via the batch API: {dict(statuses)}", flush=True)

        enqueuer = threading.Thread(target=enqueue, daemon=True)
        enqueuer.start()

        kills = redis_restarts = pg_restarts = worker_exits = 0
        restart_seconds: dict[str, float] = {}
        next_kill = time.monotonic() + args.kill_every
        next_arm = time.monotonic() + 2
        drain_started = time.monotonic()
        deadline = drain_started + args.settle_timeout
        left = args.emails
        last_print = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            try:
                left = unsettled(capped={CAPPED})
                sent = EmailSendQueue.objects.filter(status="sent").count()
            except (OperationalError, InterfaceError):
                connection.close()
                time.sleep(1)
                continue
            if left == 0 and not enqueuer.is_alive():
                break
            done = sent / args.emails
            worker_exits += stack.restart_exited_workers()
            if now >= next_kill and (left > 30 or enqueuer.is_alive()):
                stack.kill_random_worker(rng)
                stack.start_worker()
                kills += 1
                next_kill = now + args.kill_every
            if redis_restarts == 0 and done >= 0.3:
                restart_seconds["redis"] = restart_redis()
                redis_restarts += 1
                print(f"restarted Redis at {sent} sent ({restart_seconds['redis']:.1f}s)", flush=True)
            if pg_restarts == 0 and done >= 0.6:
                restart_seconds["postgres"] = restart_postgres()
                pg_restarts += 1
                connection.close()
                print(f"restarted PostgreSQL at {sent} sent ({restart_seconds['postgres']:.1f}s)", flush=True)
            if now >= next_arm:  # keep the 429's "retry after" a few seconds ahead
                arm_faults(sandbox, probability=args.fault_rate, latency=LATENCY, retry_in=3)
                next_arm = now + 2
            if now - last_print >= 10:
                print(f"[{now - drain_started:5.0f}s] sent {sent}, unsettled {left}, kills {kills}", flush=True)
                last_print = now
            time.sleep(0.5)
        drain_seconds = time.monotonic() - drain_started
        time.sleep(2)  # in-flight requests land
        sandbox.clear_faults()
        verdict = verify(sandbox, capped={CAPPED}, latency=LATENCY)
        applied = faults_by_kind(sandbox)
        try:
            call_command("verify_rollups")
            rollups = "no drift"
        except Exception as error:  # CommandError on drift
            rollups = f"DRIFT: {error}"
            verdict.problems.append(rollups)
        sends_attempted = len([f for f in sandbox.fault_log() if f.op == "send"])
        lines = [
            f"emails: {args.emails} over {args.mailboxes} mailboxes + 1 capped at {CAP}/day "
            f"({capped_emails} emails for it); {args.workers} workers x 2 processes, beat, gunicorn",
            *verdict.lines(),
            f"faults injected on sends ({args.fault_rate:.0%}): {applied} = {sum(applied.values())} "
            f"(fault-log entries for sends: {sends_attempted})",
            f"worker SIGKILLs: {kills} (every {args.kill_every:g}s, replacement started each time)",
            f"workers that exited by themselves and were restarted, as a supervisor would: {worker_exits}",
            f"Redis restarts: {redis_restarts}, PostgreSQL restarts: {pg_restarts} "
            f"({', '.join(f'{k} {v:.1f}s' for k, v in restart_seconds.items())})",
            f"enqueue: batch answers {dict(statuses)}, {enqueue_retries} batches re-sent after a failed request",
            f"verify_rollups: {rollups}",
            f"enqueue: {enqueue_seconds:.1f}s; drain until settled: {drain_seconds:.1f}s; "
            f"total: {time.monotonic() - t0:.1f}s",
            f"settled: {left == 0}; problems: {verdict.problems or 'none'}",
        ]
        print("\n".join(lines), flush=True)
        if args.record:
            Path(args.record).write_text("\n".join(f"- {line}" for line in lines) + "\n")
        return 0 if (verdict.ok and left == 0) else 1
    finally:
        stack.stop()
        connection.close()
        stop_redis()
        shutil.rmtree(REDIS_DIR, ignore_errors=True)
        stop_postgres()


if __name__ == "__main__":
    raise SystemExit(main())
