"""The demo room: what README command 1 shows a newcomer, built only through the other rooms.

Holds the demo client and its sandbox mailbox, connected through the real OAuth flow against the
local Google sandbox, which it starts as a separate process (`stack`), and a month of believable
history recorded through the event room (`history`).

May import: `dashboard`, `mailboxes`, `events`, `models` and Django; it runs `python -m
google_sandbox` as a subprocess and never imports it. Never api, web or tasks; only the
`runstack` management command uses this room.

Exposes: `stack.ensure_demo_client` / `start_demo_extras` / `start_google_sandbox` /
`connect_sandbox_mailbox`, `history.seed_demo_history`.
"""
