"""The JSON API: thin DRF views over the rooms, documented by drf-spectacular.

A view authenticates (`auth`: the integration's API key or a client's JWT), parses its input and
shapes its answer through one seam (`adapters`), and calls one function of a room. Errors become
`{"detail", "code"}` in one place (`email_service.exceptions` and the handler). Views hold no
business rules and no queries beyond looking up the caller's own objects.

May import: every room, `models`, `exceptions`. No room imports this package.
"""
