"""Gmail clients for the send path, reused per thread and mailbox (built by `credentials.gmail_client_for`).

Building the Google client parses the API description (tens of milliseconds of CPU); a worker
that sends for many mailboxes keeps one client per mailbox while its grant is unchanged.
`GmailClient` wraps one httplib2 connection object and is not thread-safe: one cache per thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from email_service.gmail.client import GmailClient
from email_service.mailboxes.credentials import gmail_client_for
from email_service.models import Mailbox

_local = threading.local()
_CACHE_SIZE = 256


def gmail_for(mailbox: Mailbox) -> GmailClient:
    """This thread's Gmail client for the mailbox (a new one when its stored grant changed)."""
    cache: OrderedDict[tuple[object, str], GmailClient] | None = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = OrderedDict()
    key = (mailbox.pk, mailbox.refresh_token_encrypted)
    client = cache.get(key)
    if client is not None:
        cache.move_to_end(key)
        return client
    client = cache[key] = gmail_client_for(mailbox)
    while len(cache) > _CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return client


def forget_gmail_client(mailbox: Mailbox) -> None:
    """Drop this thread's cached client for the mailbox (after Google refused its grant)."""
    cache = getattr(_local, "clients", None)
    if cache:
        for key in [k for k in cache if k[0] == mailbox.pk]:
            cache.pop(key).close()
