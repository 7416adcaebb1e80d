"""The operations room: keeping the service itself well, not any one email.

Holds the liveness checks behind `/api/health` and the worker and beat heartbeats (`health`), and
the removal of rows that outlived their use (`housekeeping`).

May import: `models` and Django; the broker check finds the process's Celery app through
`celery.current_app` instead of importing the project package, whose Celery signals start the
heartbeat here. Never api, web, tasks, nor another room.

Exposes: `health.system_health` / `start_heartbeat_thread` / `record_heartbeat`,
`housekeeping.purge_expired`.
"""
