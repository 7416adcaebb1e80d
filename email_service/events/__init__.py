"""The event room: what happened to an email, and the rollups the dashboard reads.

Holds the event vocabulary (how each type counts: `vocabulary`), the one way an event is
recorded with its rollups in one transaction (`recording`), and the replay that verifies or
rebuilds the rollups (`rollups`).

May import: `email_service.models` and Django. Every sub-domain room records through here; this
room imports none of them, nor api/web/tasks.

Exposes: `recording.record_event`, `record_events_batch`, `record_queued_events`,
`record_event_after_update`, `lock_messages`, `NewEvent`; `rollups.expected_rollups`,
`actual_rollups`, `rollup_differences`, `rebuild_rollups`; `vocabulary.rule_for`,
`client_local_date`.
"""
