"""The world of the production smoke tests: what users deploy, started the way they start it.

A virtual environment built from requirements.txt alone (no test tools), a fresh PostgreSQL
database, a Redis database of its own, the Google sandbox in a process of its own, and processes
whose logs are kept and read for tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_VENV = ROOT / ".venv-prod"
# Redis databases of their own (the suite uses 0; the benches 3 and 5).
SMOKE_REDIS_DB = 15
BIN_RUN_REDIS_DB = 14


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def production_venv() -> Path:
    """.venv-prod from requirements.txt alone, built anew only when that file changes (bin/lib.sh, as .venv is)."""
    env = {**os.environ, "OREE_VENV": str(PRODUCTION_VENV)}
    subprocess.run(
        ["bash", "-c", ". bin/lib.sh && ensure_venv requirements.txt --fresh"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=900,
    )
    return PRODUCTION_VENV


def clean_environment(venv: Path) -> dict[str, str]:
    """An environment with nothing of the test run's in it: the venv's bin first on PATH, as when it is activated."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }


def _server_url(database_name: str) -> str:
    db = settings.DATABASES["default"]
    credentials = str(db["USER"]) + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{database_name}"


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the suite's server; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url(name)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_redis_database(index: int) -> Iterator[str]:
    """The suite's Redis server, database `index`, emptied before and after."""
    import redis

    parts = urlsplit(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    url = urlunsplit((parts.scheme, parts.netloc, f"/{index}", "", ""))
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


PROBLEM = re.compile(r"Traceback \(most recent call last\)|^\S.* (ERROR|CRITICAL) |\[(ERROR|CRITICAL)\]", re.M)


class Processes:
    """Long-running processes, each in its own process group with its log in a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start(self, name: str, argv: list[str], *, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log(name), "wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[name] = process
        return process

    def run(self, name: str, argv: list[str], *, env: dict[str, str], timeout: float = 600) -> str:
        """Run one command to its end (its output kept like the others'); fail with its output if it fails."""
        with open(self.log(name), "wb") as log:
            done = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        output = self.log(name).read_text(errors="replace")
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output[-4000:]}"
        return output

    def assert_all_running(self) -> None:
        for name, process in self.running.items():
            code = process.poll()
            if code is not None:
                tail = self.log(name).read_text(errors="replace")[-4000:]
                raise AssertionError(f"{name} exited with code {code}:\n{tail}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        deadline = time.monotonic() + timeout
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def tracebacks(self) -> dict[str, str]:
        """Each log holding a traceback or an ERROR/CRITICAL line (Django's or gunicorn's format), from the first."""
        found = {}
        for log in sorted(self.folder.glob("*.log")):
            text = log.read_text(errors="replace")
            match = PROBLEM.search(text)
            if match:
                found[log.stem] = text[max(0, match.start() - 200) : match.start() + 3000]
        return found


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop()


GOOGLE_LINE = re.compile(r"^(GOOGLE_AUTH_URI|GOOGLE_TOKEN_URI|GOOGLE_REVOKE_URI|GMAIL_API_ENDPOINT)=(\S+)$", re.M)


def start_google_sandbox(
    processes: Processes, *, client_id: str, client_secret: str, redirect_uri: str, accounts: list[str]
) -> dict[str, str]:
    """The Google sandbox as its own process (a development tool: the test venv runs it); its GOOGLE_* values."""
    argv = [
        sys.executable, "-m", "google_sandbox", "--port", "0",
        "--client-id", client_id, "--client-secret", client_secret, "--redirect-uri", redirect_uri,
        *[arg for account in accounts for arg in ("--account", account)],
    ]  # fmt: skip
    processes.start("google-sandbox", argv, env={**os.environ})

    def ready() -> dict[str, str] | None:
        processes.assert_all_running()
        found = dict(GOOGLE_LINE.findall(processes.log("google-sandbox").read_text(errors="replace")))
        return found if len(found) == 4 else None

    endpoints: dict[str, str] = wait_for(ready, timeout=30, what="the Google sandbox to print its endpoints")
    return endpoints


class RenderProxy:
    """HTTP to the web process as Render's TLS proxy passes it on: the public host, https, the client's address."""

    def __init__(self, *, public_host: str, port: int, client_ip: str = "203.0.113.7") -> None:
        self.public_host = public_host
        self.origin = f"http://127.0.0.1:{port}"
        self.client_ip = client_ip
        self.session = requests.Session()

    def request(self, method: str, url: str, *, proto: str = "https", **kwargs: Any) -> requests.Response:
        parts = urlsplit(url)
        if parts.netloc and parts.netloc != self.public_host:
            raise AssertionError(f"{url} is not on the public host {self.public_host}")
        target = self.origin + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Host": self.public_host,
            "X-Forwarded-Proto": proto,
            "X-Forwarded-For": self.client_ip,
            **kwargs.pop("headers", {}),
        }
        kwargs.setdefault("timeout", 15)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, target, headers=headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)
