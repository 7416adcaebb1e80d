"""OreeStats settings, read from the environment (every variable is documented in .env.example)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import django_stubs_ext

from OreeStats.env import ConfigError, Env, database_from_env

# Lets admin and queryset classes be subscripted at run time (ModelAdmin[Client]) for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()
# Local state of the serverless mode: SQLite file, broker folders, cache. Tests point it elsewhere.
VAR_DIR = Path(env.text("OREE_VAR_DIR", str(BASE_DIR / "var"))).resolve()


def _fernet_key_from(secret: str) -> str:
    """A stable development-only Fernet key derived from another secret."""
    return base64.urlsafe_b64encode(hashlib.sha256(f"oree-token-key:{secret}".encode()).digest()).decode()


def _check_fernet_keys(value: str) -> list[str]:
    keys = [key.strip() for key in value.split(",") if key.strip()]
    for key in keys:
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (ValueError, TypeError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(
                "TOKEN_ENCRYPTION_KEY", "each comma-separated key must be a Fernet key (32 url-safe base64 bytes)"
            )
    return keys


try:
    DEBUG = env.flag("DEBUG", False)
    SECRET_KEY = env.required("SECRET_KEY", when=not DEBUG, fallback="dev-only-insecure-secret-key-change-me")
    if not DEBUG and (len(SECRET_KEY) < 32 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")):
        # Stricter than Django's security.W009 (a warning), which also calls a 44-character base64
        # key (256 random bits, what Render's generateValue gives) too short; silenced below.
        raise ConfigError("SECRET_KEY", "must be a long random value (32+ characters, not a placeholder)")
    JWT_SECRET_KEY = env.required("JWT_SECRET_KEY", when=not DEBUG, fallback=f"dev-jwt:{SECRET_KEY}")
    JWT_ALGORITHM = env.choice("JWT_ALGORITHM", "HS256", {"HS256", "HS384", "HS512"})
    JWT_ACCESS_TTL_SECONDS = env.integer("JWT_ACCESS_TTL_SECONDS", 12 * 3600, minimum=60, maximum=30 * 86400)
    OREE_API_KEY = env.required("OREE_API_KEY", when=not DEBUG, fallback="dev-api-key")
    if len(OREE_API_KEY) < 8:
        raise ConfigError("OREE_API_KEY", "must be at least 8 characters")
    TOKEN_ENCRYPTION_KEYS = _check_fernet_keys(
        env.required("TOKEN_ENCRYPTION_KEY", when=not DEBUG, fallback=_fernet_key_from(SECRET_KEY))
    )
    ALLOWED_HOSTS = env.items("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
    PUBLIC_BASE_URL = env.url("PUBLIC_BASE_URL", "http://localhost:8000", schemes={"http", "https"})
    TRUSTED_PROXY_COUNT = env.integer("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
    SECURE_SSL_REDIRECT = env.flag("SECURE_SSL_REDIRECT", False)
    if SECURE_SSL_REDIRECT and TRUSTED_PROXY_COUNT == 0:
        # Behind a TLS-terminating proxy Django sees plain http: without trusting the proxy's
        # X-Forwarded-Proto this redirect would loop forever.
        raise ConfigError("SECURE_SSL_REDIRECT", "needs TRUSTED_PROXY_COUNT >= 1 (the TLS proxy in front of the app)")
    # Strict-Transport-Security on every https answer, for this host only: the app may be served from
    # a customer's tracking sub-domain whose siblings are not ours to force onto https, nor to preload.
    SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 86400)

    DATABASES = {"default": database_from_env(env, sqlite_path=str(VAR_DIR / "oreestats.sqlite3"))}

    REDIS_URL = env.raw("REDIS_URL")
    if REDIS_URL is not None:
        REDIS_URL = env.url("REDIS_URL", "", schemes={"redis", "rediss", "unix"})
    CELERY_BROKER_URL = env.text("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
    if not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "filesystem://", "memory://", "amqp://")):
        raise ConfigError("CELERY_BROKER_URL", f"unsupported broker URL {CELERY_BROKER_URL!r}")
    CELERY_RESULT_BACKEND = env.raw("CELERY_RESULT_BACKEND")

    GOOGLE_CLIENT_ID = env.text("GOOGLE_CLIENT_ID")
    GOOGLE_CLIENT_SECRET = env.text("GOOGLE_CLIENT_SECRET")
    GOOGLE_REDIRECT_URI = env.url(
        "GOOGLE_REDIRECT_URI", f"{PUBLIC_BASE_URL}/api/oauth/callback", schemes={"http", "https"}
    )
    GOOGLE_AUTH_URI = env.url("GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/auth", schemes={"http", "https"})
    GOOGLE_TOKEN_URI = env.url("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token", schemes={"http", "https"})
    GOOGLE_REVOKE_URI = env.url("GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke", schemes={"http", "https"})
    GMAIL_API_ENDPOINT = env.url("GMAIL_API_ENDPOINT", "https://gmail.googleapis.com", schemes={"http", "https"})
    GMAIL_HTTP_TIMEOUT = env.integer("GMAIL_HTTP_TIMEOUT", 30, minimum=1, maximum=300)

    MACHINE_OPEN_WINDOW_SECONDS = env.integer("MACHINE_OPEN_WINDOW_SECONDS", 3, minimum=0, maximum=3600)
    MACHINE_CLICK_WINDOW_SECONDS = env.integer("MACHINE_CLICK_WINDOW_SECONDS", 10, minimum=0, maximum=3600)
    # How long a web process gathers tracking hits before writing them to Redis in one batch
    # (services/tracking.py, the hit writer); 0 writes each hit in its request.
    TRACKING_FLUSH_MS = env.integer("TRACKING_FLUSH_MS", 10, minimum=0, maximum=60_000)
    MAILBOX_MAX_SENDS_PER_SECOND = env.number("MAILBOX_MAX_SENDS_PER_SECOND", 2.5, minimum=0.001)
    # A claimed email's lease: longer than the send task's hard time limit (lease - 30 s), so only
    # a dead worker's rows are ever taken over; they are then looked up in the mailbox first.
    SEND_LEASE_SECONDS = env.integer("SEND_LEASE_SECONDS", 300, minimum=20, maximum=3600)
    # After an unknown send outcome, how long Gmail gets to index the message before we search it.
    SEND_UNKNOWN_RESOLVE_DELAY_SECONDS = env.integer("SEND_UNKNOWN_RESOLVE_DELAY_SECONDS", 60, minimum=0, maximum=3600)
    # First retry delay after a transient send failure; doubles each attempt (1, 2, 4, 8 min by default).
    SEND_RETRY_BASE_SECONDS = env.integer("SEND_RETRY_BASE_SECONDS", 60, minimum=1, maximum=3600)
    HEARTBEAT_STALE_SECONDS = env.integer("HEARTBEAT_STALE_SECONDS", 90, minimum=5)
    LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
except ConfigError as _error:
    raise SystemExit(f"OreeStats configuration error: {_error}") from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "email_service",
]

MIDDLEWARE = [
    # First: answers the tracking pixel and click itself, before session/auth/CSRF work (DESIGN.md 7).
    "email_service.api.tracking.TrackingFastPathMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "OreeStats.urls"
WSGI_APPLICATION = "OreeStats.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if REDIS_URL:
    CACHES: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "oree",
        }
    }
else:
    # Web, worker and beat are separate processes: a per-process memory cache would let each
    # keep its own throttle counts, so the serverless default shares files instead.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Behind the platform's TLS proxy: trust its X-Forwarded-Proto only when a proxy is declared.
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = not DEBUG and PUBLIC_BASE_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = [PUBLIC_BASE_URL]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# `manage.py check --deploy` passes with these three off on purpose (see SECRET_KEY and SECURE_HSTS_SECONDS):
# W009 is replaced by the stricter start-up check, W005/W021 would reach beyond this host.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W009", "security.W021"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "email_service.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "OreeStats API",
    "DESCRIPTION": "Sends cold email through clients' Gmail mailboxes, tracks what recipients do, "
    "and reports it per client.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "email_service.api.schema_hooks.add_common_error_responses",
    ],
    # Swagger UI from the installed sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "EmailStatusEnum": "email_service.models.EmailSendQueue.Status",
        "MailboxStatusEnum": "email_service.models.Mailbox.Status",
        "CampaignStatusEnum": "email_service.models.Campaign.Status",
        "LeadStatusEnum": "email_service.models.Lead.Status",
        "HealthStatusEnum": ["ok", "unavailable"],
    },
}

# Celery: JSON only, ids in messages, PostgreSQL (not the broker) is the queue's truth.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "data_folder_in": str(VAR_DIR / "broker" / "out"),
        "data_folder_out": str(VAR_DIR / "broker" / "out"),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Every line is scrubbed of secrets and tokens, whichever library logged it (tests/security).
    "filters": {"redact_secrets": {"()": "email_service.log_redaction.RedactSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httplib2/oauthlib at DEBUG print request headers, bearer tokens included.
        "httplib2": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
        "requests_oauthlib": {"level": "WARNING"},
        "googleapiclient.discovery": {"level": "WARNING"},
    },
}
