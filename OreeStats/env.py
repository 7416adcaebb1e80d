"""Typed readers for environment variables that fail with a message naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class Env:
    """Reads one environment mapping; every failure raises ConfigError naming the variable."""

    _TRUE = {"1", "true", "yes", "on"}
    _FALSE = {"0", "false", "no", "off", ""}

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None else value

    def required(self, name: str, *, when: bool, fallback: str) -> str:
        """The variable's value; when `when` holds and it is unset, a ConfigError."""
        value = self.raw(name)
        if value is not None:
            return value
        if when:
            raise ConfigError(name, "is required when DEBUG is off")
        return fallback

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in self._TRUE:
            return True
        if lowered in self._FALSE:
            return False
        raise ConfigError(name, f"expected true/false, got {value!r}")

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise ConfigError(name, f"must be at most {maximum}, got {number}")
        return number

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {value!r}") from None
        if number != number or (minimum is not None and number < minimum):
            raise ConfigError(name, f"must be a number of at least {minimum}, got {value!r}")
        return number

    def items(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: str, default: str, choices: set[str]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(sorted(choices))}, got {value!r}")
        return value

    def url(self, name: str, default: str, *, schemes: set[str]) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(name, f"expected an absolute {'/'.join(sorted(schemes))} URL, got {value!r}")
        return value.rstrip("/")


_POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}


def database_from_env(env: Env, *, sqlite_path: str) -> dict[str, object]:
    """Django's default database: DATABASE_URL, else the DB_* variables, else a local SQLite file."""
    url = env.raw("DATABASE_URL")
    if url is not None:
        import dj_database_url

        parts = urlsplit(url)
        if parts.scheme not in _POSTGRES_SCHEMES | {"sqlite"}:
            raise ConfigError("DATABASE_URL", f"expected a postgres:// URL, got scheme {parts.scheme!r}")
        if parts.scheme != "sqlite" and (not parts.hostname or not parts.path.strip("/")):
            raise ConfigError("DATABASE_URL", "expected postgres://USER:PASSWORD@HOST:PORT/NAME")
        try:
            parsed = dj_database_url.parse(url, conn_max_age=env.integer("DB_CONN_MAX_AGE", 60, minimum=0))
            _ = parts.port  # a non-numeric port raises ValueError here
        except ValueError as error:
            raise ConfigError("DATABASE_URL", f"cannot be parsed ({error})") from None
        config: dict[str, object] = dict(parsed)
    elif env.raw("DB_NAME") is not None:
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env.text("DB_NAME"),
            "USER": env.text("DB_USER", "postgres"),
            "PASSWORD": env.text("DB_PASSWORD"),
            "HOST": env.text("DB_HOST", "localhost"),
            "PORT": str(env.integer("DB_PORT", 5432, minimum=1, maximum=65535)),
            "CONN_MAX_AGE": env.integer("DB_CONN_MAX_AGE", 60, minimum=0),
        }
    else:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": sqlite_path,
            # Web, worker and beat share the file: wait for the lock instead of failing,
            # and take the write lock at BEGIN so two writers never deadlock on upgrade.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["CONN_HEALTH_CHECKS"] = True
        config.setdefault("OPTIONS", {})
    return config
