"""A logging filter that keeps secrets and tokens out of every log line, whatever logged them.

Libraries below us log more than we choose when their loggers are turned up to DEBUG (oauthlib
logs token responses, googleapiclient and urllib3 log URLs, Celery logs task arguments), so the
last line of defence sits on the handlers: every record's final text is scrubbed of our own
configured secrets, bearer credentials, JWTs, Google tokens and secret-named parameters.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings

REDACTED = "[redacted]"
SECRET_SETTINGS = (
    "OREE_API_KEY",
    "JWT_SECRET_KEY",
    "SECRET_KEY",
    "TOKEN_ENCRYPTION_KEYS",
    "GOOGLE_CLIENT_SECRET",
)
SECRET_NAMES = (
    r"access_token|refresh_token|id_token|client_secret|code_verifier|code|password|current_password|"
    r"new_password|assertion|api_key|token|authorization"
)
PATTERNS = [
    # Authorization headers and their echoes: "Bearer <anything up to a quote, comma or space>".
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\",;]+"), r"\1 " + REDACTED),
    # key=value in query strings, form bodies and reprs; "key": "value" in JSON and dict reprs.
    (re.compile(rf"(?i)\b({SECRET_NAMES})=([^&\s'\",;)]+)"), r"\1=" + REDACTED),
    (re.compile(rf"(?i)([\"']({SECRET_NAMES})[\"']\s*:\s*)[\"'][^\"']*[\"']"), r"\1'" + REDACTED + "'"),
    # JWTs, Google access and refresh tokens, Google authorisation codes, Fernet ciphertexts.
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), REDACTED),
    (re.compile(r"\bya29\.[\w-]+"), REDACTED),
    (re.compile(r"\b1//[\w-]+"), REDACTED),
    (re.compile(r"\b4/0[\w-]+"), REDACTED),
    (re.compile(r"\bgAAAAA[\w=-]+"), REDACTED),
]


def _configured_secrets() -> tuple[str, ...]:
    values: list[str] = []
    for name in SECRET_SETTINGS:
        value = getattr(settings, name, "") or ""
        values.extend(str(item) for item in value) if isinstance(value, list | tuple) else values.append(str(value))
    # Longest first, so a secret containing another is replaced whole; short values are not secrets.
    return tuple(sorted({value for value in values if len(value) >= 8}, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every known secret and token-looking value replaced by [redacted]."""
    for secret in _configured_secrets():
        text = text.replace(secret, REDACTED)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrite each record's message (and traceback) with its secrets redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a badly formatted record still gets logged, scrubbed
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
