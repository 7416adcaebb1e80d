"""README command 1 on real servers: `bin/run` with DATABASE_URL and REDIS_URL, from requirements.txt alone."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from email_service.demo.stack import DEMO_EMAIL, DEMO_MAILBOXES, DEMO_PASSWORD
from tests.foundation.test_runstack import assert_an_email_goes_out_tracked
from tests.production.conftest import (
    BIN_RUN_REDIS_DB,
    Processes,
    clean_environment,
    free_port,
    fresh_database,
    own_redis_database,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_bin_run_serves_the_demo_on_postgresql_and_redis(production_venv: Path, processes: Processes, tmp_path):
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    with fresh_database("oree_binrun") as database_url, own_redis_database(BIN_RUN_REDIS_DB) as redis_url:
        env = {
            **clean_environment(production_venv),
            # bin/run installs into and runs from this venv: requirements.txt alone, as a newcomer's.
            "OREE_VENV": str(production_venv),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OREE_VAR_DIR": str(tmp_path / "var"),
        }
        stack = processes.start("bin-run", ["bin/run", "--bind", f"127.0.0.1:{port}", "--web-workers", "1"], env=env)

        def healthy() -> dict[str, Any] | None:
            processes.assert_all_running()
            try:
                response = requests.get(f"{web}/api/health", timeout=5)
            except requests.RequestException:
                return None
            return response.json() if response.status_code == 200 else None

        # The first start migrates PostgreSQL, seeds a month of demo history and connects the sandbox mailboxes.
        health = wait_for(healthy, timeout=180, interval=1, what="bin/run's /api/health to answer 200")
        assert health["components"]["database"]["detail"] == "postgresql"
        assert health["components"]["broker"]["detail"] == "redis"
        assert health["components"]["redis"]["ok"] is True

        login = requests.post(
            f"{web}/api/client/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}, timeout=10
        )
        assert login.status_code == 200, login.text
        dashboard = {"Authorization": f"Bearer {login.json()['access_token']}"}
        rows = requests.get(f"{web}/api/client/mailboxes", headers=dashboard, timeout=10).json()["mailboxes"]
        assert sorted((row["email"], row["status"]) for row in rows) == sorted(
            (email, "active") for email, _ in DEMO_MAILBOXES
        )
        stats = requests.get(f"{web}/api/client/stats", headers=dashboard, timeout=10).json()
        assert stats["last_30_days"]["emails_sent"] > 0  # the demo history is there

        assert_an_email_goes_out_tracked(port, "dev-api-key", login.json()["client"]["id"])

        stack.send_signal(signal.SIGINT)  # Ctrl-C, as the README says; runstack stops its children
        assert stack.wait(timeout=60) == 0
        processes.stop()  # anything left, before the database goes
    output = processes.log("bin-run").read_text(errors="replace")
    assert "Stopped." in output
    assert processes.tracebacks() == {}
