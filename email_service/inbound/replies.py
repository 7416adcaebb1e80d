"""Replies, auto-replies and bounces: matching inbound mail to what we sent, classifying it, stopping sequences.

Inbound mail arrives two ways: n8n reports a reply (`POST /api/track/reply`), or the history
poller finds it in the mailbox. Both end in `record_inbound`, which records one event per Gmail
message (its `dedupe_key` names the mailbox and the Gmail id, so the webhook and the poller
seeing the same message count it once) and applies the stop rules of services.suppression.
"""

from __future__ import annotations

import email.policy
import hashlib
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from email_service.events.recording import record_event
from email_service.exceptions import InvalidInput, NotFound
from email_service.gmail.client import GmailClient, GmailMessage
from email_service.gmail.client import NotFound as GmailNotFound
from email_service.inbound import suppression
from email_service.mailboxes.credentials import gmail_client_for
from email_service.models import EmailEvent, EmailSendQueue, Mailbox

logger = logging.getLogger(__name__)

REPLY = "reply"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"

SNIPPET_MAX = 500
SUBJECT_MAX = 300

# Senders of delivery status notifications (local parts, lower-case).
BOUNCE_SENDERS: tuple[str, ...] = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
BOUNCE_SUBJECT_RE = re.compile(
    r"(delivery status notification|undeliver(able|ed)|mail delivery (failed|failure|subsystem)|"
    r"returned mail|failure notice|delivery (has )?failed|non.?delivery)",
    re.IGNORECASE,
)
# Headers that mark a message as sent by a program (RFC 3834 and the common de-facto ones).
AUTO_REPLY_HEADERS: tuple[str, ...] = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
AUTO_PRECEDENCE: frozenset[str] = frozenset({"auto_reply"})
# Subjects of out-of-office answers, in the languages our clients' prospects write in.
AUTO_REPLY_SUBJECT_RE = re.compile(
    r"^\s*(automatic reply|auto(matic)?[ -]?reply|auto[ -]?response|autoreply|out of (the )?office|"
    r"ooo\b|away from (the )?office|on (vacation|holiday|leave)|vacation reply|abwesenheit|"
    r"automatische antwort|r[ée]ponse automatique|absence|respuesta autom[aá]tica|"
    r"risposta automatica|automatisch antwoord|resposta autom[aá]tica)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Classification:
    """What an inbound message is; for a bounce, its enhanced status code and whether it is final."""

    kind: str
    bounce_status: str = ""
    final: bool = True


@dataclass(frozen=True)
class InboundFacts:
    """What we take from an inbound message to match and record it."""

    classification: Classification
    from_email: str
    subject: str
    snippet: str
    message_id: str
    references: tuple[str, ...]  # In-Reply-To, References and the original's id inside a DSN
    bounced_recipient: str


def parse_rfc822(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header must not stop the poller
        return ""
    return str(value).strip() if value is not None else ""


def _is_delivery_report(message: Message) -> bool:
    return message.get_content_type() == "multipart/report" and (
        str(message.get_param("report-type", "", header="content-type")).lower() == "delivery-status"
    )


def _delivery_status_text(message: Message) -> str:
    texts: list[str] = []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            # The stdlib parses it as a list of header blocks.
            payload = part.get_payload()
            if isinstance(payload, list):
                texts.extend(str(block) for block in payload)
            else:
                texts.append(str(payload))
    return "\n".join(texts)


def _plain_text(message: Message, limit: int = 20000) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain" and part.get_content_disposition() != "attachment":
            try:
                content = part.get_content() if isinstance(part, EmailMessage) else part.get_payload(decode=True)
            except (LookupError, ValueError, AssertionError):
                continue
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            return str(content)[:limit]
    return ""


def _bounce_status(message: Message) -> tuple[str, bool]:
    """The worst enhanced status code in a DSN and whether it is final (5.x.x, or `Action: failed`)."""
    report = _delivery_status_text(message)
    codes = [m.group(0) for m in _STATUS_RE.finditer(report or _plain_text(message))]
    action_failed = re.search(r"^\s*action:\s*failed", report, re.IGNORECASE | re.MULTILINE) is not None
    hard = next((code for code in codes if code.startswith("5")), "")
    if hard:
        return hard, True
    transient = next((code for code in codes if code.startswith("4")), "")
    if transient:
        return transient, False
    # A mailer-daemon notice with no code at all: final only when it says it failed.
    return "", action_failed or not report


def classify(message: Message) -> Classification:
    """Reply, auto-reply or bounce (RFC 3464 reports and mailer-daemon notices; RFC 3834 auto-replies)."""
    sender = parseaddr(_header(message, "From"))[1].lower()
    local_part = sender.split("@", 1)[0]
    subject = _header(message, "Subject")
    if _is_delivery_report(message) or (
        local_part in BOUNCE_SENDERS and (BOUNCE_SUBJECT_RE.search(subject) or not subject)
    ):
        status, final = _bounce_status(message)
        return Classification(BOUNCE, bounce_status=status, final=final)
    auto_submitted = _header(message, "Auto-Submitted").lower()
    if auto_submitted and auto_submitted != "no":
        return Classification(AUTO_REPLY)
    if any(_header(message, name) for name in AUTO_REPLY_HEADERS):
        return Classification(AUTO_REPLY)
    if _header(message, "Precedence").lower() in AUTO_PRECEDENCE:
        return Classification(AUTO_REPLY)
    if _header(message, "X-Auto-Response-Suppress") and AUTO_REPLY_SUBJECT_RE.search(subject):
        return Classification(AUTO_REPLY)
    if AUTO_REPLY_SUBJECT_RE.search(subject):
        return Classification(AUTO_REPLY)
    return Classification(REPLY)


# The report's body is plain text: a caller's MIME structure headers would describe parts that are not there.
_REPORT_IGNORED_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


def reported_message(*, from_email: str, subject: str, body: str, headers: dict[str, str]) -> Message:
    """An RFC 822 message rebuilt from a webhook's fields, for `classify` (header values on one line)."""
    message = Message()
    for name, value in headers.items():
        clean_name = re.sub(r"[^!-9;-~]", "", str(name))[:76]
        if clean_name and clean_name.lower() not in _REPORT_IGNORED_HEADERS | {"from", "subject"}:
            message[clean_name] = " ".join(str(value).split())[:998]
    if from_email:
        message["From"] = from_email
    if subject:
        message["Subject"] = " ".join(subject.split())
    message["Content-Type"] = "text/plain; charset=utf-8"
    message.set_payload(body)
    return message


def _message_ids(value: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value)


def _original_references(message: Message) -> list[str]:
    """Message-IDs of the original message quoted inside a DSN (message/rfc822 or text/rfc822-headers)."""
    found: list[str] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                found.extend(_message_ids(_header(inner, "Message-ID")))
        elif content_type == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = BytesParser(policy=email.policy.default).parsebytes(text, headersonly=True)
                found.extend(_message_ids(_header(headers, "Message-ID")))
    return found


def _bounced_recipient(message: Message) -> str:
    report = _delivery_status_text(message)
    match = re.search(r"^\s*(final|original)-recipient:\s*[^;]*;\s*(\S+)", report, re.IGNORECASE | re.MULTILINE)
    return match.group(2).strip("<>").lower() if match else ""


def inbound_facts(message: Message, *, snippet: str = "") -> InboundFacts:
    classification = classify(message)
    references = _message_ids(_header(message, "In-Reply-To")) + _message_ids(_header(message, "References"))
    if classification.kind == BOUNCE:
        references += _original_references(message)
    text = snippet or " ".join(_plain_text(message, limit=4 * SNIPPET_MAX).split())
    return InboundFacts(
        classification=classification,
        from_email=parseaddr(_header(message, "From"))[1].lower(),
        subject=_header(message, "Subject")[:SUBJECT_MAX],
        snippet=text[:SNIPPET_MAX],
        message_id=(_message_ids(_header(message, "Message-ID")) or [""])[0],
        references=tuple(dict.fromkeys(references)),
        bounced_recipient=_bounced_recipient(message) if classification.kind == BOUNCE else "",
    )


def recipients_of(message: Message) -> set[str]:
    return {address.lower() for _, address in getaddresses([_header(message, "To"), _header(message, "Cc")])}


# ---------------------------------------------------------------------------------------------
# Matching inbound mail to our messages
# ---------------------------------------------------------------------------------------------


def _bare(message_id: str) -> str:
    return message_id.strip().strip("<>")


def find_by_message_ids(message_ids: Iterable[str], *, mailbox_id: uuid.UUID | None = None) -> EmailSendQueue | None:
    """Our sent message whose Message-ID (as Gmail stored it, or as we set it) is among `message_ids`."""
    forms: set[str] = set()
    for value in message_ids:
        bare = _bare(value)
        if bare:
            forms.update({bare, f"<{bare}>"})
    if not forms:
        return None
    rows = EmailSendQueue.objects.filter(Q(rfc_message_id__in=forms) | Q(message_id__in=forms))
    if mailbox_id is not None:
        rows = rows.filter(mailbox_id=mailbox_id)
    return rows.select_related("client").order_by("-sent_at").first()


def find_by_thread(thread_id: str, *, mailbox_id: uuid.UUID | None = None) -> EmailSendQueue | None:
    """The latest message we sent in a Gmail thread."""
    if not thread_id:
        return None
    rows = EmailSendQueue.objects.filter(gmail_thread_id=thread_id, status=EmailSendQueue.Status.SENT)
    if mailbox_id is not None:
        rows = rows.filter(mailbox_id=mailbox_id)
    return rows.select_related("client").order_by("-sent_at", "-sequence_number").first()


def find_by_lead(*, lead_id: uuid.UUID, client_id: uuid.UUID) -> EmailSendQueue | None:
    return (
        EmailSendQueue.objects.filter(lead_id=lead_id, client_id=client_id, status=EmailSendQueue.Status.SENT)
        .select_related("client")
        .order_by("-sent_at", "-sequence_number")
        .first()
    )


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundResult:
    event: EmailEvent | None  # None when this inbound message was recorded before
    message: EmailSendQueue
    kind: str
    stopped: int  # follow-ups cancelled (or paused)

    @property
    def created(self) -> bool:
        return self.event is not None


def _event_type(classification: Classification) -> tuple[str, bool, str]:
    """(event type, is_machine, reason): a transient bounce is kept, labelled, and counted nowhere."""
    if classification.kind == BOUNCE and not classification.final:
        return EmailEvent.Type.BOUNCE, True, "transient_bounce"
    return classification.kind, False, ""


def record_inbound(
    *,
    message: EmailSendQueue,
    classification: Classification,
    dedupe_key: str,
    received_at: datetime | None,
    from_email: str,
    subject: str,
    snippet: str,
    source: str,
    gmail_message_id: str = "",
) -> InboundResult:
    """Record one inbound message against our `message` and apply its stop rule, once per `dedupe_key`."""
    event_type, is_machine, reason = _event_type(classification)
    detail: dict[str, Any] = {
        "source": source,
        "from_email": from_email[:254],
        "subject": subject[:SUBJECT_MAX],
        "snippet": snippet[:SNIPPET_MAX],
    }
    if classification.kind == BOUNCE:
        detail.update({"bounce_status": classification.bounce_status, "final": classification.final})
    with transaction.atomic():
        event = record_event(
            message=message,
            event_type=event_type,
            occurred_at=received_at or timezone.now(),
            is_machine=is_machine,
            machine_reason=reason,
            dedupe_key=dedupe_key,
            gmail_message_id=gmail_message_id[:64],
            detail=detail,
        )
        stopped = 0
        if event is not None:
            stopped = apply_stop_rule(message=message, classification=classification)
    return InboundResult(event=event, message=message, kind=classification.kind, stopped=stopped)


def apply_stop_rule(*, message: EmailSendQueue, classification: Classification) -> int:
    if classification.kind == REPLY:
        return suppression.stop_after_reply(message=message)
    if classification.kind == AUTO_REPLY:
        return suppression.stop_after_auto_reply(message=message)
    if classification.kind == BOUNCE and classification.final:
        return suppression.stop_after_bounce(message=message)
    return 0


def inbound_dedupe_key(*, mailbox_id: uuid.UUID | None, gmail_message_id: str) -> str:
    return f"inbound:{mailbox_id or '-'}:{gmail_message_id}"


def report_reply(
    *,
    gmail_thread_id: str = "",
    in_reply_to: str = "",
    lead_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
    gmail_message_id: str = "",
    from_email: str = "",
    subject: str = "",
    body: str = "",
    snippet: str = "",
    received_at: datetime | None = None,
    headers: dict[str, str] | None = None,
) -> InboundResult:
    """A reply reported by n8n: matched by thread, then our Message-ID, then lead; idempotent.

    Classified like the poller's mail (`classify`) from what the report gives: sender, subject,
    body and any headers (`Auto-Submitted`, `X-Autoreply`, `Precedence`…), so an out-of-office
    answer is an auto-reply and a mailer-daemon notice a bounce; a plain answer stays a reply.
    """
    if not (gmail_thread_id or in_reply_to or lead_id):
        raise InvalidInput("Give gmail_thread_id, in_reply_to, or lead_id with client_id.", code="reply_target_missing")
    if lead_id and not client_id:
        raise InvalidInput("lead_id needs client_id.", code="client_id_required", field="client_id")
    message = find_by_thread(gmail_thread_id) if gmail_thread_id else None
    if message is None and in_reply_to:
        message = find_by_message_ids(_message_ids(in_reply_to) or [in_reply_to])
    if message is None and lead_id and client_id:
        message = find_by_lead(lead_id=lead_id, client_id=client_id)
    if message is None or (client_id is not None and message.client_id != client_id):
        raise NotFound("No sent email matches this reply.", code="reply_not_matched")
    text = " ".join((snippet or body).split())
    if gmail_message_id:
        dedupe_key = inbound_dedupe_key(mailbox_id=message.mailbox_id, gmail_message_id=gmail_message_id)
    else:
        fingerprint = "\x1f".join(
            [from_email.strip().lower(), subject, received_at.isoformat() if received_at else "", text[:2000]]
        )
        dedupe_key = f"reply-webhook:{message.pk}:{hashlib.sha256(fingerprint.encode()).hexdigest()[:40]}"
    classification = classify(
        reported_message(from_email=from_email, subject=subject, body=body or snippet, headers=headers or {})
    )
    return record_inbound(
        message=message,
        classification=classification,
        dedupe_key=dedupe_key,
        received_at=received_at,
        from_email=from_email,
        subject=subject,
        snippet=text,
        source="webhook",
        gmail_message_id=gmail_message_id,
    )


# ---------------------------------------------------------------------------------------------
# The Gmail history poller: replies, auto-replies and bounces without any webhook
# ---------------------------------------------------------------------------------------------

RESYNC_DAYS = 7
RESYNC_MAX_THREADS = 200
HISTORY_PAGE_SIZE = 100


@dataclass
class PollResult:
    examined: int = 0
    recorded: int = 0
    resynced: bool = False


def _is_ours(gmail_message: GmailMessage, mailbox: Mailbox) -> bool:
    """Our own sent mail appears in history too: never a reply (LESSONS.md)."""
    if "SENT" in gmail_message.label_ids or "DRAFT" in gmail_message.label_ids:
        return True
    sender = parseaddr(gmail_message.header("From") or "")[1].lower()
    return sender == mailbox.email.lower()


def _match_inbound(
    *, mailbox: Mailbox, gmail_message: GmailMessage, found: InboundFacts, parsed: Message
) -> EmailSendQueue | None:
    message = find_by_thread(gmail_message.thread_id, mailbox_id=mailbox.pk)
    if message is None and found.references:
        message = find_by_message_ids(found.references, mailbox_id=mailbox.pk)
    if message is None and found.bounced_recipient:
        message = (
            EmailSendQueue.objects.filter(
                mailbox=mailbox, recipient_email__iexact=found.bounced_recipient, status=EmailSendQueue.Status.SENT
            )
            .select_related("client")
            .order_by("-sent_at")
            .first()
        )
    return message


def process_gmail_message(*, mailbox: Mailbox, gmail: GmailClient, gmail_id: str) -> bool:
    """Fetch, classify, match and record one Gmail message; True when a new event was recorded."""
    key = inbound_dedupe_key(mailbox_id=mailbox.pk, gmail_message_id=gmail_id)
    if EmailEvent.objects.filter(dedupe_key=key).exists():
        return False  # seen before: spare the fetch
    try:
        gmail_message = gmail.get_message(gmail_id, format="raw")
    except GmailNotFound:
        return False  # deleted since the history entry
    if _is_ours(gmail_message, mailbox) or gmail_message.raw is None:
        return False
    parsed = parse_rfc822(gmail_message.raw)
    found = inbound_facts(parsed, snippet=gmail_message.snippet)
    target = _match_inbound(mailbox=mailbox, gmail_message=gmail_message, found=found, parsed=parsed)
    if target is None:
        return False  # not an answer to anything we sent
    result = record_inbound(
        message=target,
        classification=found.classification,
        dedupe_key=key,
        received_at=gmail_message.internal_date,
        from_email=found.from_email,
        subject=found.subject,
        snippet=found.snippet,
        source="gmail",
        gmail_message_id=gmail_id,
    )
    return result.created


def poll_mailbox(*, mailbox: Mailbox, gmail: GmailClient | None = None) -> PollResult:
    """Read the mailbox's history since its cursor, record what answers our mail, then move the cursor.

    The cursor moves only after every page was read and every message handled, so a failure half
    way re-reads the same history next time (each Gmail message is recorded at most once anyway).
    A first poll starts the cursor at the mailbox's current history; a cursor Gmail no longer keeps
    resynchronises from the recent inbox threads.
    """
    result = PollResult()
    client, owned = (gmail, False) if gmail is not None else (gmail_client_for(mailbox), True)
    try:
        if not mailbox.history_id:
            cursor = client.get_profile().history_id
            _store_cursor(mailbox, cursor)
            return result
        gmail_ids: list[str] = []
        try:
            page_token: str | None = None
            while True:
                page = client.list_history(
                    mailbox.history_id, page_token, history_types=("messageAdded",), max_results=HISTORY_PAGE_SIZE
                )
                for record in page.records:
                    for ref in record.messages_added:
                        if "SENT" not in ref.label_ids and "DRAFT" not in ref.label_ids:
                            gmail_ids.append(ref.id)
                page_token = page.next_page_token
                if not page_token:
                    new_cursor = page.history_id
                    break
        except GmailNotFound:
            result.resynced = True
            new_cursor = client.get_profile().history_id
            for summary in client.list_recent_inbox_threads(
                newer_than_days=RESYNC_DAYS, max_threads=RESYNC_MAX_THREADS
            ):
                thread = client.get_thread(summary.id, format="minimal")
                gmail_ids.extend(m.id for m in thread.messages if "SENT" not in m.label_ids)
        for gmail_id in dict.fromkeys(gmail_ids):
            result.examined += 1
            result.recorded += int(process_gmail_message(mailbox=mailbox, gmail=client, gmail_id=gmail_id))
        _store_cursor(mailbox, new_cursor)
    finally:
        if owned:
            client.close()
    return result


def _store_cursor(mailbox: Mailbox, cursor: str) -> None:
    now = timezone.now()
    Mailbox.objects.filter(pk=mailbox.pk).update(history_id=cursor, history_synced_at=now)
    mailbox.history_id, mailbox.history_synced_at = cursor, now


def mailboxes_to_poll() -> list[uuid.UUID]:
    """Connected mailboxes (paused or at their cap still receive replies)."""
    return list(
        Mailbox.objects.exclude(status=Mailbox.Status.DISCONNECTED)
        .exclude(refresh_token_encrypted="")
        .values_list("pk", flat=True)
    )


POLL_ERROR_PREFIX = "Reply polling: "


def poll_mailbox_by_id(*, mailbox_id: uuid.UUID) -> PollResult | None:
    """The task's entry point: None when the mailbox is gone, disconnected, or its poll failed (and says why).

    Google refusing the grant disconnects the mailbox through `mailbox_authorization_revoked`
    (its emails held, the reason stored); any other Gmail error is written to the mailbox's
    `last_error` for the dashboard, and cleared by the next poll that succeeds.
    """
    from email_service.gmail.client import AuthorizationRevoked, GmailError
    from email_service.mailboxes.credentials import TokenDecryptionError
    from email_service.mailboxes.lifecycle import disconnect_mailbox, mailbox_authorization_revoked

    mailbox = Mailbox.objects.filter(pk=mailbox_id).exclude(status=Mailbox.Status.DISCONNECTED).first()
    if mailbox is None:
        return None
    try:
        result = poll_mailbox(mailbox=mailbox)
    except AuthorizationRevoked as error:
        mailbox_authorization_revoked(mailbox=mailbox, error=error)
        return None
    except TokenDecryptionError:
        disconnect_mailbox(mailbox=mailbox, reason="stored tokens cannot be decrypted: reconnect the mailbox")
        return None
    except GmailError as error:
        # GmailError messages never carry tokens (gmail_client), so they may be shown to the client.
        logger.warning("reply polling of mailbox %s failed: %s", mailbox.pk, error)
        _poll_error(mailbox, f"{POLL_ERROR_PREFIX}{error}")
        return None
    except Exception:
        _poll_error(mailbox, f"{POLL_ERROR_PREFIX}an internal error stopped the poll; it is retried automatically")
        raise
    Mailbox.objects.filter(pk=mailbox.pk, last_error__startswith=POLL_ERROR_PREFIX).update(
        last_error="", last_error_at=None
    )
    return result


def _poll_error(mailbox: Mailbox, text: str) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_error=text[:1000], last_error_at=timezone.now())
