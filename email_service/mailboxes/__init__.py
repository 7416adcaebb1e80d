"""The mailbox room: connecting a client's Gmail mailbox, keeping its tokens, and its state.

Holds the OAuth consent flow (`oauth`), the encrypted tokens and the Gmail client built from them
(`credentials`), the per-thread client cache of the send path (`clients`), and the pause, resume
and disconnect transitions operators and Google's answers cause (`lifecycle`).

May import: `email_service.gmail` (the only door to Google), `models`, `exceptions` and Django.
Never api, web, tasks, nor the rooms that use mailboxes (sending, inbound, tracking, dashboard).

Exposes: `oauth.start_mailbox_connection` / `complete_mailbox_connection`,
`credentials.gmail_client_for` / `encrypt_secret` / `decrypt_secret` / `reencrypt_all_tokens`,
`clients.gmail_for` / `forget_gmail_client`, and `lifecycle`'s `pause_mailbox`, `resume_mailbox`,
`disconnect_mailbox*`, `mailbox_gmail`, `verify_mailbox_connection`.
"""
