"""Configuration: every way of naming the database, and start-up refusing bad values by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from OreeStats.env import ConfigError, Env, database_from_env

ROOT = Path(__file__).resolve().parents[2]


def test_database_url_configures_postgresql():
    config = database_from_env(Env({"DATABASE_URL": "postgres://u:p@db.example:5433/oree"}), sqlite_path="x")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "oree",
        "u",
        "p",
        "db.example",
        5433,
    )
    assert config["CONN_HEALTH_CHECKS"] is True


def test_db_variables_configure_postgresql_when_there_is_no_url():
    config = database_from_env(
        Env(
            {"DB_NAME": "neondb", "DB_USER": "owner", "DB_PASSWORD": "pw", "DB_HOST": "h.neon.tech", "DB_PORT": "6543"}
        ),
        sqlite_path="x",
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "neondb",
        "owner",
        "pw",
        "h.neon.tech",
        "6543",
    )


def test_database_url_wins_over_db_variables():
    config = database_from_env(Env({"DATABASE_URL": "postgres://u@a:5432/one", "DB_NAME": "two"}), sqlite_path="x")
    assert config["NAME"] == "one"


def test_nothing_configured_means_a_local_sqlite_file(tmp_path):
    config = database_from_env(Env({}), sqlite_path=str(tmp_path / "db.sqlite3"))
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h/db", "not a url", "postgres://", "postgres://u:p@host:notaport/db", "postgres://u@host"],
)
def test_malformed_database_url_names_the_variable(url):
    with pytest.raises(ConfigError) as error:
        database_from_env(Env({"DATABASE_URL": url}), sqlite_path="x")
    assert error.value.name == "DATABASE_URL"


def test_non_integer_db_port_names_the_variable():
    with pytest.raises(ConfigError) as error:
        database_from_env(Env({"DB_NAME": "x", "DB_PORT": "five"}), sqlite_path="x")
    assert error.value.name == "DB_PORT"


PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "hV3q9Jx2LmT7wZp4Rk8sNf6Yd1Gc5Bb0Ea-Ui_OoPl",
    "JWT_SECRET_KEY": "j" * 40,
    "OREE_API_KEY": "k" * 24,
    "TOKEN_ENCRYPTION_KEY": "x8P6uW9ZbY0t1p7QeJmRkq3h2V5sNcLdAaFgHiTjUwE=",
}


def start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Load the real settings in a fresh interpreter, as gunicorn or celery would."""
    clean = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "OreeStats.settings", "OREE_VAR_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_start_with_every_secret_set(tmp_path):
    result = start(PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


@pytest.mark.parametrize("missing", ["SECRET_KEY", "JWT_SECRET_KEY", "OREE_API_KEY", "TOKEN_ENCRYPTION_KEY"])
def test_a_missing_secret_stops_start_up_with_one_line_naming_it(missing, tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = start(env, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing in lines[0]


@pytest.mark.parametrize("weak", ["short-but-real-Key9", "s" * 40, "django-insecure-" + "x7Hq2mVb9LpT4wZr8Kd3Nf6Ys1Gc"])
def test_a_weak_secret_key_stops_start_up_in_production(weak, tmp_path):
    result = start({**PRODUCTION_ENV, "SECRET_KEY": weak}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_debug_mode_needs_no_secrets(tmp_path):
    result = start({"DEBUG": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://u:p@host:port/db"),
        ("JWT_ALGORITHM", "none"),
        ("JWT_ALGORITHM", "RS256"),
        ("TRUSTED_PROXY_COUNT", "two"),
        ("MACHINE_OPEN_WINDOW_SECONDS", "-1"),
        ("MACHINE_CLICK_WINDOW_SECONDS", "1.5"),
        ("TOKEN_ENCRYPTION_KEY", "too-short"),
        ("DEBUG", "maybe"),
        ("PUBLIC_BASE_URL", "localhost:8000"),
        ("REDIS_URL", "localhost:6379"),
        ("GMAIL_API_ENDPOINT", "ftp://gmail"),
        ("SECURE_SSL_REDIRECT", "1"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name, value, tmp_path):
    result = start({**PRODUCTION_ENV, name: value}, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"OreeStats configuration error: {name}:")
