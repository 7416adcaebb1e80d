"""`manage.py runstack`: migrate, ensure the demo client, and run web, worker and beat in the foreground.

The first README command calls this. Ctrl-C (or any one process dying) stops all of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from email_service.demo.stack import DEMO_EMAIL, DEMO_PASSWORD, ensure_demo_client, start_demo_extras


class Command(BaseCommand):
    help = "Run web (gunicorn), a Celery worker and Celery beat together, with a demo client."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=2)
        parser.add_argument("--no-demo", action="store_true", help="skip the demo client and sandbox mailbox")

    def handle(self, *args: Any, **options: Any) -> None:
        (settings.VAR_DIR / "cache").mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        extras: list[subprocess.Popen[bytes]] = []
        host, _, port = options["bind"].rpartition(":")
        wildcard = host in ("", "0.0.0.0", "::")  # noqa: S104 (a bound wildcard is not an address to link to)
        base_url = f"http://{'localhost' if wildcard else host}:{port}"
        # Links in sent emails (pixel, clicks, unsubscribe) must reach this server unless told otherwise.
        os.environ.setdefault("PUBLIC_BASE_URL", base_url)
        if not options["no_demo"]:
            client = ensure_demo_client()
            extras = start_demo_extras(client=client, stdout=self.stdout, public_base_url=os.environ["PUBLIC_BASE_URL"])
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo client: {client.name} — log in with {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
                    f"Client id: {client.pk}\n"
                    f"Integration API key: Authorization: Bearer {settings.OREE_API_KEY}"
                )
            )
        python = sys.executable
        processes = {
            "web": [
                python, "-m", "gunicorn", "OreeStats.wsgi:application",
                "--config", "gunicorn.conf.py", "--bind", options["bind"], "--workers", str(options["web_workers"]),
            ],
            "worker": [
                python, "-m", "celery", "-A", "OreeStats", "worker", "--loglevel=INFO",
                "--concurrency", str(options["worker_concurrency"]), "--without-gossip", "--without-mingle",
            ],
            "beat": [python, "-m", "celery", "-A", "OreeStats", "beat", "--loglevel=INFO"],
        }  # fmt: skip
        running: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False
        exit_code = 0

        def stop_all(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop_all)
        signal.signal(signal.SIGTERM, stop_all)
        try:
            for name, command in processes.items():
                # Our own fixed argv, no shell.
                # Each in its own process group, so stopping it reaches its pool and worker processes too.
                running[name] = subprocess.Popen(  # noqa: S603
                    command, cwd=settings.BASE_DIR, env=os.environ.copy(), start_new_session=True
                )
            self.stdout.write(
                self.style.SUCCESS(
                    f"Running: web http://{host}:{port}/ (API docs /api/docs/, health /api/health), "
                    "worker and beat. Ctrl-C stops everything."
                )
            )
            while not stopping:
                for name, process in running.items():
                    code = process.poll()
                    if code is not None:
                        self.stderr.write(f"{name} exited with code {code}; stopping the others.")
                        exit_code = code or 1
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            for process in running.values():
                _signal_group(process, signal.SIGTERM)
            for process in extras:
                if process.poll() is None:
                    process.terminate()
            deadline = time.monotonic() + 15
            for process in [*running.values(), *extras]:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            # Whatever a child left behind (a prefork pool process, a gunicorn worker) goes too.
            for process in running.values():
                _signal_group(process, signal.SIGKILL)
        self.stdout.write("Stopped.")
        if exit_code:
            sys.exit(exit_code)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process group `process` leads; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
