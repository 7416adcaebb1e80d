"""A mailbox's OAuth tokens: encrypted at rest, decrypted only to build a Gmail client.

Tokens are Fernet ciphertexts under `TOKEN_ENCRYPTION_KEY` (MultiFernet: the first key
encrypts, every listed key decrypts, so keys rotate without a flag day). A refreshed access
token is written back encrypted the moment google-auth obtains it.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils import timezone

from email_service.gmail.client import GmailClient, GoogleConfig, MailboxCredentials
from email_service.models import Mailbox

logger = logging.getLogger(__name__)


class TokenDecryptionError(Exception):
    """The stored ciphertext cannot be read with any configured key."""


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def cipher() -> MultiFernet:
    return _cipher(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt_secret(plaintext: str) -> str:
    if not plaintext:
        return ""
    return cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError("a stored token cannot be decrypted with TOKEN_ENCRYPTION_KEY") from None


def credentials_for(mailbox: Mailbox) -> MailboxCredentials:
    return MailboxCredentials(
        access_token=decrypt_secret(mailbox.access_token_encrypted) or None,
        refresh_token=decrypt_secret(mailbox.refresh_token_encrypted) or None,
        expiry=mailbox.token_expires_at,
        scopes=tuple(mailbox.scopes.split()),
    )


def store_credentials(*, mailbox: Mailbox, credentials: MailboxCredentials) -> None:
    """Write tokens back encrypted; a refresh without a new refresh token keeps the old one."""
    mailbox.access_token_encrypted = encrypt_secret(credentials.access_token or "")
    if credentials.refresh_token:
        mailbox.refresh_token_encrypted = encrypt_secret(credentials.refresh_token)
    mailbox.token_expires_at = credentials.expiry
    if credentials.scopes:
        mailbox.scopes = " ".join(credentials.scopes)
    mailbox.updated_at = timezone.now()
    Mailbox.objects.filter(pk=mailbox.pk).update(
        access_token_encrypted=mailbox.access_token_encrypted,
        refresh_token_encrypted=mailbox.refresh_token_encrypted,
        token_expires_at=mailbox.token_expires_at,
        scopes=mailbox.scopes,
        updated_at=mailbox.updated_at,
    )


def gmail_client_for(mailbox: Mailbox, *, config: GoogleConfig | None = None) -> GmailClient:
    """A Gmail client for this mailbox that saves refreshed tokens; one per task or thread."""
    return GmailClient(
        config or GoogleConfig.from_settings(),
        credentials_for(mailbox),
        on_refresh=lambda refreshed: store_credentials(mailbox=mailbox, credentials=refreshed),
    )


def reencrypt_all_tokens() -> int:
    """Rotate: rewrite every stored token under the first configured key. Returns mailboxes touched."""
    touched = 0
    for mailbox in Mailbox.objects.exclude(access_token_encrypted="", refresh_token_encrypted=""):
        fields = {}
        for name in ("access_token_encrypted", "refresh_token_encrypted"):
            value = getattr(mailbox, name)
            if value:
                fields[name] = cipher().rotate(value.encode()).decode()
        Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
        touched += 1
    return touched
