"""Mailbox tokens: encrypted at rest, rotatable, and refreshed tokens written back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from email_service.gmail.client import MailboxCredentials
from email_service.mailboxes.credentials import (
    TokenDecryptionError,
    credentials_for,
    decrypt_secret,
    gmail_client_for,
    reencrypt_all_tokens,
    store_credentials,
)
from email_service.models import Mailbox

pytestmark = pytest.mark.django_db


def test_tokens_in_the_database_are_not_readable_without_the_key(alice, connect_mailbox, settings):
    mailbox = connect_mailbox(alice, "alice.sender@alice.test")
    stored = Mailbox.objects.values("access_token_encrypted", "refresh_token_encrypted").get(pk=mailbox.pk)
    plain = credentials_for(mailbox)
    for column, token in zip(stored.values(), (plain.access_token, plain.refresh_token), strict=True):
        assert token and token not in column
        assert column.startswith("gAAAAA")
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(TokenDecryptionError):
        credentials_for(Mailbox.objects.get(pk=mailbox.pk))


def test_a_new_key_decrypts_old_tokens_and_rotation_moves_them_to_it(alice, connect_mailbox, settings):
    mailbox = connect_mailbox(alice, "alice.sender@alice.test")
    before = credentials_for(mailbox)
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]
    assert credentials_for(Mailbox.objects.get(pk=mailbox.pk)) == before
    assert reencrypt_all_tokens() == 1
    settings.TOKEN_ENCRYPTION_KEYS = [new_key]
    assert credentials_for(Mailbox.objects.get(pk=mailbox.pk)) == before


def test_an_expired_access_token_is_refreshed_and_written_back(alice, connect_mailbox, google_sandbox):
    mailbox = connect_mailbox(alice, "alice.sender@alice.test")
    old = credentials_for(mailbox)
    store_credentials(
        mailbox=mailbox,
        credentials=MailboxCredentials(
            access_token="expired-token", refresh_token=None, expiry=timezone.now() - timedelta(minutes=5),
            scopes=old.scopes,
        ),
    )  # fmt: skip
    with gmail_client_for(Mailbox.objects.get(pk=mailbox.pk)) as gmail:
        assert gmail.get_profile().email_address == "alice.sender@alice.test"
    refreshed = credentials_for(Mailbox.objects.get(pk=mailbox.pk))
    assert refreshed.access_token not in (None, "expired-token")
    assert refreshed.refresh_token == old.refresh_token
    assert refreshed.expiry > timezone.now()
    assert decrypt_secret("") == ""
