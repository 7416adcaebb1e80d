"""The project's settings plus the baseline routes the benchmark compares against."""

from OreeStats.settings_test import *  # noqa: F403
from OreeStats.settings_test import MIDDLEWARE

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# Same place in the chain as the tracking fast path: the baseline gets the same Django request
# handling (WSGIRequest, signals, connection handling), only without recording.
MIDDLEWARE = ["bench.tracking.baseline.BaselineMiddleware", *MIDDLEWARE]
ROOT_URLCONF = "bench.tracking.urls"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
