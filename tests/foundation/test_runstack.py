"""README command 1 end to end: runstack brings up web, worker and beat on SQLite with no servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runstack_serves_a_healthy_system_without_postgres_or_redis(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update({"DEBUG": "1", "OREE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "OreeStats.settings"})
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--bind", f"127.0.0.1:{port}", "--web-workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
                body = response.json()
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert body.get("status") == "ok", body
        assert body["components"]["database"]["detail"] == "sqlite"
        assert body["components"]["broker"]["detail"] == "filesystem"
        assert (tmp_path / "oreestats.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert "demo@oreestats.local" in output
    assert "Stopped." in output
    # Ctrl-C stopped every child: nothing is left listening on the port.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
