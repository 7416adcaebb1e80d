"""Settings for the test suite: production settings with test secrets and PostgreSQL/Redis defaults."""

import os

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("JWT_SECRET_KEY", "test-jwt-secret-key-not-for-production-0123456789")
os.environ.setdefault("OREE_API_KEY", "test-api-key-0123456789")
os.environ.setdefault("TOKEN_ENCRYPTION_KEY", "x8P6uW9ZbY0t1p7QeJmRkq3h2V5sNcLdAaFgHiTjUwE=")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oreestats")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
# Each tracking hit written in its request, so a test sees it in Redis when the response is back
# (tests/tracking/test_hit_writer.py runs the writer thread itself).
os.environ.setdefault("TRACKING_FLUSH_MS", "0")

from OreeStats.settings import *  # noqa: F403
from OreeStats.settings import CACHES, STORAGES

# The real algorithm (PBKDF2-SHA256) with fewer rounds: tests create many accounts.
PASSWORD_HASHERS = ["tests.support.hashers.FastPBKDF2PasswordHasher"]
# Each xdist worker keeps its own cache keys.
CACHES["default"]["KEY_PREFIX"] = f"oree-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
