"""A mailbox's OAuth tokens: encrypted at rest with MultiFernet, decrypted only to talk to Gmail.

`TOKEN_ENCRYPTION_KEY` holds one or more Fernet keys, newest first: encryption uses the newest,
decryption tries each, so keys rotate without re-connecting every mailbox.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils import timezone

from email_service.models import Mailbox

if TYPE_CHECKING:
    from email_service.gmail_client import GmailClient, MailboxCredentials

logger = logging.getLogger(__name__)


class UndecryptableToken(Exception):
    """A stored token was encrypted with a key no longer configured: the mailbox must reconnect."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _cipher() -> MultiFernet:
    return _fernet(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt_token(value: str) -> str:
    return _cipher().encrypt(value.encode()).decode() if value else ""


def decrypt_token(value: str) -> str:
    if not value:
        return ""
    try:
        return _cipher().decrypt(value.encode()).decode()
    except InvalidToken:
        raise UndecryptableToken("stored token cannot be decrypted with the configured keys") from None


def credentials_for(mailbox: Mailbox) -> MailboxCredentials:
    from email_service.gmail_client import MailboxCredentials

    return MailboxCredentials(
        access_token=decrypt_token(mailbox.access_token_encrypted) or None,
        refresh_token=decrypt_token(mailbox.refresh_token_encrypted) or None,
        expiry=mailbox.token_expires_at,
        scopes=tuple(mailbox.scopes.split()),
    )


def store_refreshed_credentials(*, mailbox_id: uuid.UUID | str, credentials: MailboxCredentials) -> None:
    """Write a refreshed access token back (encrypted), so the next process does not refresh again."""
    fields: dict[str, object] = {"updated_at": timezone.now(), "token_expires_at": credentials.expiry}
    if credentials.access_token:
        fields["access_token_encrypted"] = encrypt_token(credentials.access_token)
    if credentials.refresh_token:
        fields["refresh_token_encrypted"] = encrypt_token(credentials.refresh_token)
    Mailbox.objects.filter(pk=mailbox_id).update(**fields)


_local = threading.local()
_CACHE_SIZE = 256


def gmail_for(mailbox: Mailbox) -> GmailClient:
    """A Gmail client for the mailbox, reused within this thread while its grant is unchanged.

    Building the Google client parses the API description (tens of milliseconds of CPU); a worker
    that sends for many mailboxes keeps one per mailbox. `GmailClient` is not thread-safe, hence
    one cache per thread.
    """
    from email_service.gmail_client import GmailClient, GoogleConfig

    cache: OrderedDict[tuple[object, str], GmailClient] | None = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = OrderedDict()
    key = (mailbox.pk, mailbox.refresh_token_encrypted)
    client = cache.get(key)
    if client is not None:
        cache.move_to_end(key)
        return client
    mailbox_id = mailbox.pk
    client = GmailClient(
        GoogleConfig.from_settings(),
        credentials_for(mailbox),
        on_refresh=lambda credentials: store_refreshed_credentials(mailbox_id=mailbox_id, credentials=credentials),
    )
    cache[key] = client
    while len(cache) > _CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return client


def forget_gmail_client(mailbox: Mailbox) -> None:
    """Drop this thread's cached client for the mailbox (after its grant was refused)."""
    cache = getattr(_local, "clients", None)
    if cache:
        for key in [k for k in cache if k[0] == mailbox.pk]:
            cache.pop(key).close()
