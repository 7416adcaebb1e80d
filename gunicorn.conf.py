"""gunicorn settings; the command line and GUNICORN_CMD_ARGS may override them."""

import os
import sys

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 5000
max_requests_jitter = 500
accesslog = "-"
# The query string can hold nothing secret here, but keep the access log to method, path and status.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def worker_exit(server: object, worker: object) -> None:
    """Write out the tracking hits this worker still holds (atexit does too; a second flush finds none)."""
    tracking = sys.modules.get("email_service.tracking.hits")
    if tracking is not None:  # not loaded (a worker that failed to boot, say): nothing was queued
        tracking.flush_hits()
