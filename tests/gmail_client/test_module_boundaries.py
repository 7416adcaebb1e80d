"""Import-time rules: no Django in the sandbox or at gmail_client import; settings read lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True, env=env, timeout=60
    )


def test_neither_module_imports_django() -> None:
    result = run(
        """
        import sys
        import google_sandbox, google_sandbox.testing, email_service.gmail.client
        loaded = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_sandbox_imports_no_google_library() -> None:
    result = run(
        """
        import sys
        import google_sandbox
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"google", "googleapiclient", "httplib2",
                        "google_auth_oauthlib", "google_auth_httplib2", "oauthlib"})
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_config_from_django_settings() -> None:
    result = run(
        """
        from django.conf import settings
        settings.configure(
            GOOGLE_CLIENT_ID="id-1", GOOGLE_CLIENT_SECRET="secret-1",
            GOOGLE_REDIRECT_URI="https://app.test/api/oauth/callback",
            GOOGLE_AUTH_URI="http://127.0.0.1:9/o/oauth2/auth", GOOGLE_TOKEN_URI="http://127.0.0.1:9/token",
            GOOGLE_REVOKE_URI="http://127.0.0.1:9/revoke", GMAIL_API_ENDPOINT="http://127.0.0.1:9",
            GMAIL_HTTP_TIMEOUT=12,
        )
        from email_service.gmail.client import GoogleConfig
        config = GoogleConfig.from_settings()
        assert config == GoogleConfig(
            client_id="id-1", client_secret="secret-1", redirect_uri="https://app.test/api/oauth/callback",
            auth_uri="http://127.0.0.1:9/o/oauth2/auth", token_uri="http://127.0.0.1:9/token",
            revoke_uri="http://127.0.0.1:9/revoke", gmail_endpoint="http://127.0.0.1:9", timeout=12.0,
        ), config
        assert "secret-1" not in repr(config)
        """
    )
    assert result.returncode == 0, result.stderr
