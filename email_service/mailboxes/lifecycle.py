"""Mailbox state changes made by operators and by Google's answers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from email_service.gmail import client as google
from email_service.gmail.client import GoogleConfig
from email_service.mailboxes.credentials import TokenDecryptionError, decrypt_secret, gmail_client_for
from email_service.models import EmailSendQueue, Mailbox

logger = logging.getLogger(__name__)

Status = Mailbox.Status


def pause_mailbox(*, mailbox: Mailbox, reason: str = "paused by an operator") -> bool:
    """Stop claiming for this mailbox; a send in flight finishes. False unless it was active or limited."""
    changed = Mailbox.objects.filter(pk=mailbox.pk, status__in=[Status.ACTIVE, Status.LIMITED]).update(
        status=Status.PAUSED, status_reason=reason, updated_at=timezone.now()
    )
    return changed == 1


def resume_mailbox(*, mailbox: Mailbox) -> bool:
    """Claim for this mailbox again. False unless it was paused."""
    changed = Mailbox.objects.filter(pk=mailbox.pk, status=Status.PAUSED).update(
        status=Status.ACTIVE, status_reason="", updated_at=timezone.now()
    )
    return changed == 1


def disconnect_mailbox(*, mailbox: Mailbox, reason: str) -> int:
    """Mark the mailbox disconnected and hold its unsent emails (never fail or lose them).

    Returns how many queued emails were held. Revoking the token at Google is the caller's
    first step when the disconnection is asked for (not when Google already refused us).
    """
    now = timezone.now()
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(
            status=Status.DISCONNECTED,
            status_reason=reason,
            disconnected_at=now,
            last_error=reason,
            last_error_at=now,
            updated_at=now,
        )
        mailbox.status, mailbox.status_reason, mailbox.disconnected_at = Status.DISCONNECTED, reason, now
        return EmailSendQueue.objects.filter(mailbox=mailbox, status=EmailSendQueue.Status.QUEUED).update(
            status=EmailSendQueue.Status.HELD, status_reason="mailbox_disconnected", updated_at=now
        )


# Rows held because their mailbox could not send; they go back to the queue when it is reconnected.
# (`waiting_for_mailbox` is the sending dispatcher's reason for a lead mid-sequence on this mailbox.)
HELD_FOR_MAILBOX_REASONS = ("mailbox_disconnected", "waiting_for_mailbox")

REASON_REVOKED_BY_GOOGLE = "Google revoked this mailbox's authorisation (invalid_grant): reconnect it to resume sending"


def resume_held_emails(*, mailbox: Mailbox) -> int:
    """Queue again the emails held because this mailbox was disconnected; returns how many."""
    return EmailSendQueue.objects.filter(
        mailbox=mailbox, status=EmailSendQueue.Status.HELD, status_reason__in=HELD_FOR_MAILBOX_REASONS
    ).update(status=EmailSendQueue.Status.QUEUED, status_reason="", updated_at=timezone.now())


@dataclass(frozen=True)
class Disconnection:
    """What a requested disconnection did: emails held, and whether Google confirmed the revocation.

    ``revoked`` is None when there was no token to revoke, False when Google could not be
    reached (the encrypted tokens are kept so that disconnecting again retries the revocation).
    """

    held_emails: int
    revoked: bool | None


def disconnect_mailbox_by_request(
    *, mailbox: Mailbox, reason: str = "disconnected by the client", config: GoogleConfig | None = None
) -> Disconnection:
    """Revoke the mailbox's grant at GOOGLE_REVOKE_URI, then mark it disconnected and hold its emails.

    The one service behind `DELETE /api/client/mailboxes/<id>` and the admin action. Idempotent:
    disconnecting again retries a revocation that could not reach Google.
    """
    config = config or GoogleConfig.from_settings()
    revoked: bool | None = None
    token = ""
    try:
        token = decrypt_secret(mailbox.refresh_token_encrypted) or decrypt_secret(mailbox.access_token_encrypted)
    except TokenDecryptionError:
        logger.warning("mailbox %s: stored tokens cannot be decrypted; nothing to revoke", mailbox.pk)
    if token:
        try:
            google.revoke_token(config, token)  # False: Google already forgot it; fine either way
            revoked = True
        except (google.GmailError, ValueError) as exc:
            logger.warning("mailbox %s: revocation at Google failed (%s)", mailbox.pk, type(exc).__name__)
            revoked = False
    with transaction.atomic():
        held = disconnect_mailbox(mailbox=mailbox, reason=reason)
        if revoked is not False:
            Mailbox.objects.filter(pk=mailbox.pk).update(
                access_token_encrypted="", refresh_token_encrypted="", token_expires_at=None
            )
            mailbox.access_token_encrypted = mailbox.refresh_token_encrypted = ""
            mailbox.token_expires_at = None
    return Disconnection(held_emails=held, revoked=revoked)


def mailbox_authorization_revoked(*, mailbox: Mailbox, error: google.GmailError | None = None) -> int:
    """Google refused the mailbox's grant (`invalid_grant`, or 401 after a refresh): disconnect it.

    Call this wherever a Gmail call raises `AuthorizationRevoked`. Holds the mailbox's unsent
    emails and records why; returns how many were held.
    """
    reason = REASON_REVOKED_BY_GOOGLE
    if error is not None and error.google_reason and error.google_reason != "invalid_grant":
        reason = f"Google refused this mailbox's authorisation ({error.google_reason}): reconnect it to resume sending"
    logger.warning("mailbox %s disconnected: %s", mailbox.pk, reason)
    return disconnect_mailbox(mailbox=mailbox, reason=reason[:255])


@contextmanager
def mailbox_gmail(mailbox: Mailbox, *, config: GoogleConfig | None = None) -> Iterator[google.GmailClient]:
    """A Gmail client for the mailbox that disconnects it when Google says the grant is gone.

    Refreshed tokens are saved as they arrive; `AuthorizationRevoked` is re-raised after the
    mailbox was disconnected, so the caller still sees it.
    """
    try:
        gmail = gmail_client_for(mailbox, config=config)
    except TokenDecryptionError as exc:
        disconnect_mailbox(mailbox=mailbox, reason="stored tokens cannot be decrypted: reconnect the mailbox")
        raise google.AuthorizationRevoked("the mailbox's stored tokens cannot be decrypted") from exc
    with gmail:
        try:
            yield gmail
        except google.AuthorizationRevoked as exc:
            mailbox_authorization_revoked(mailbox=mailbox, error=exc)
            raise


def verify_mailbox_connection(*, mailbox: Mailbox, config: GoogleConfig | None = None) -> google.Profile:
    """Ask Gmail who the mailbox is (refreshing its token if due); a revoked grant disconnects it."""
    with mailbox_gmail(mailbox, config=config) as gmail:
        return gmail.get_profile()
