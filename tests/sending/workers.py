"""Real Celery worker processes for the end-to-end sending tests (Redis broker, the test database)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from OreeStats.celery import app
from tests.sending.gmail import sandbox_env

ROOT = Path(__file__).resolve().parents[2]


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "OreeStats.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL or "",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    if db.get("PASSWORD"):
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(f"{db['USER']}@", f"{db['USER']}:{db['PASSWORD']}@")
    return env


@contextlib.contextmanager
def worker_pool(tmp_path: Path, sandbox: Any, **env: str) -> Iterator[Workers]:
    """Workers pointed at the sandbox with these settings; the broker is purged before and after."""
    purge_broker()
    running = Workers(tmp_path, {**sandbox_env(sandbox), **env})
    try:
        yield running
    finally:
        running.stop()
        purge_broker()
        connection.close()


class Workers:
    """Start N `celery -A OreeStats worker` processes; stop (or SIGKILL) them."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = worker_env(env)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, *, pool: str = "prefork", concurrency: int = 2) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            index = len(self.procs)
            log = open(self.tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115 - lives with the process
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "OreeStats",
                    "worker",
                    f"--pool={pool}",
                    f"--concurrency={concurrency}",
                    f"--hostname=sendtest{index}-{os.getpid()}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=WARNING",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and everything it forked: no cleanup, no acknowledgement."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp_path.glob("worker-*.log")))


def purge_broker() -> None:
    app.control.purge()


def wait_until(predicate, *, timeout, interval=0.5, tick=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
