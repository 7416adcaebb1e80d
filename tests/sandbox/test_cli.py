"""`python -m google_sandbox`: the sandbox standalone, with the OAuth client the app's GOOGLE_* variables name."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from google_sandbox import SandboxControl

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_cli_serves_the_sandbox_with_the_apps_oauth_client_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "sandbox.log"
    env = {**os.environ, "GOOGLE_CLIENT_ID": "cmd-test.apps.googleusercontent.com", "GOOGLE_CLIENT_SECRET": "s3cret"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "google_sandbox", "--port", "0", "--account", "pat@example.com=Pat"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "control API:" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        base = re.search(r"listening on (\S+)", text).group(1)
        assert f"GOOGLE_TOKEN_URI={base}/token" in text
        assert [a["email"] for a in SandboxControl(base).accounts()] == ["pat@example.com"]
        # Our client is registered: a token request with its secret gets past client authentication.
        answer = requests.post(
            f"{base}/token",
            data={"grant_type": "refresh_token", "refresh_token": "nope"},
            auth=("cmd-test.apps.googleusercontent.com", "s3cret"),
            timeout=5,
        )
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_a_client_id_needs_its_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_CLIENT")}
    env["GOOGLE_CLIENT_ID"] = "half.apps.googleusercontent.com"
    result = subprocess.run(
        [sys.executable, "-m", "google_sandbox", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--client-id and --client-secret go together" in result.stderr
