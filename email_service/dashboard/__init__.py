"""The dashboard room: what a client reads and changes about itself, always scoped to that client.

Holds client accounts and their revocable JWT sessions (`sessions`), the dashboard's read
selectors over rollups, campaigns, mailboxes and the reply feed (`stats`), and the client's own
settings with their validation (`client_settings`). Every function takes the client of a verified
token; another client's id is NotFound.

May import: `events` (rollups, replay), `models`, `exceptions` and Django. Never api, web, tasks,
nor the sending, tracking or inbound rooms.

Exposes: `sessions.create_client` / `login` / `logout` / `issue_access_token` /
`authenticate_access_token` / `change_password`, `stats.client_stats` / `campaign_performance` /
`replies_feed` / `get_client_*`, `client_settings.client_settings` / `update_client_settings`.
"""
