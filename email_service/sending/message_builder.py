"""The MIME message of one queued email: headers, threading, unsubscribe, HTML and its text twin.

What every message carries (DESIGN.md decision 3):
* `Message-ID` of our own making under the sending mailbox's domain, fixed on the row before the
  first attempt and reused by every retry, so a lookup can tell whether an attempt went out;
* `X-Oree-Queue-Id`: the row's id, found among sent mail when Gmail replaced our Message-ID;
* `List-Unsubscribe` (https URL under PUBLIC_BASE_URL) and `List-Unsubscribe-Post` (RFC 8058);
* `multipart/alternative`: a plain-text part derived from the HTML, then the HTML as tracking
  prepared it (`services.tracking.prepare_tracked_html`, the tracking issue's seam).

A follow-up whose subject is empty or repeats the first one continues the earlier step's Gmail
thread: `threadId`, `In-Reply-To` and `References` to the Message-ID Gmail stored for the
previous step, and `Re: <first subject>`. A different subject starts a new thread.
"""

from __future__ import annotations

import binascii
import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser

from django.utils import timezone

from email_service.gmail.client import QUEUE_ID_HEADER
from email_service.models import EmailSendQueue, Mailbox
from email_service.tracking import hits as tracking

_RE_PREFIX = re.compile(r"^\s*(re|fwd?|aw|sv)\s*:\s*", re.IGNORECASE)
# Google refuses a message's References header past roughly this many ids; keep the newest.
_MAX_REFERENCES = 20


@dataclass(frozen=True)
class BuiltMessage:
    raw: bytes
    thread_id: str | None
    subject: str
    in_reply_to: str
    references: str


def new_message_id(*, email: EmailSendQueue, mailbox: Mailbox) -> str:
    """A globally unique RFC 5322 Message-ID under the mailbox's domain, tied to the row."""
    return f"<{email.pk.hex}{message_id_suffix(mailbox)}"


def message_id_suffix(mailbox: Mailbox) -> str:
    """What follows the row id (32 hex digits) in a new Message-ID: random part, domain, `>`."""
    return f".{secrets.token_hex(6)}@{mailbox.domain}>"


def strip_reply_prefixes(subject: str) -> str:
    previous = None
    while previous != subject:
        previous, subject = subject, _RE_PREFIX.sub("", subject, count=1)
    return subject.strip()


def previous_step(email: EmailSendQueue) -> EmailSendQueue | None:
    """The latest earlier step of the same lead and campaign that went out, if any."""
    if email.sequence_number <= 1:
        return None  # a first step has no earlier step: spare the query
    return (
        EmailSendQueue.objects.filter(
            lead_id=email.lead_id,
            campaign_id=email.campaign_id,
            sequence_number__lt=email.sequence_number,
            status=EmailSendQueue.Status.SENT,
        )
        .order_by("-sequence_number")
        .first()
    )


def thread_subject(*, requested: str, previous: EmailSendQueue | None) -> tuple[str, bool]:
    """The subject to send and whether it continues the previous step's thread."""
    if previous is None or not previous.gmail_thread_id:
        return requested.strip() or "(no subject)", False
    first = strip_reply_prefixes(previous.subject)
    wanted = strip_reply_prefixes(requested)
    if not wanted or wanted.casefold() == first.casefold():
        return f"Re: {first}", True
    return requested.strip(), False


class _TextExtractor(HTMLParser):
    """HTML → readable plain text: blocks become lines, links keep their address, scripts vanish."""

    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skipping = 0
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self._href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.out.append("\n")
        if tag == "a" and self._href:
            href = self._href.pop()
            if href and href.startswith(("http://", "https://", "mailto:")):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(body: str) -> str:
    parser = _TextExtractor()
    parser.feed(body)
    parser.close()
    text = html.unescape("".join(parser.out))
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def build_message(
    *, email: EmailSendQueue, mailbox: Mailbox, now: datetime | None = None, fresh: bool = False
) -> BuiltMessage:
    """The message as it leaves; `email.message_id` must already be fixed on the row.

    `fresh`: this is the row's first build (its claim just fixed the Message-ID), so it has no
    tracking rows of an earlier build to reuse (services.tracking spares the lookups).
    """
    assert email.message_id, "the Message-ID is fixed when the row is claimed"
    previous = previous_step(email)
    subject, continues = thread_subject(requested=email.subject, previous=previous)
    in_reply_to = references = ""
    thread_id: str | None = None
    if continues and previous is not None:
        parent = previous.rfc_message_id or previous.message_id
        chain = [*previous.references.split(), parent]
        in_reply_to, references = parent, " ".join(chain[-_MAX_REFERENCES:])
        thread_id = previous.gmail_thread_id

    subject = one_line(subject) or "(no subject)"
    headers = [
        ("To", email.recipient_email),
        ("Subject", subject),
        ("Date", format_datetime(now or timezone.now())),
        ("Message-ID", email.message_id),
        *([("In-Reply-To", in_reply_to), ("References", references)] if in_reply_to else []),
        (QUEUE_ID_HEADER, str(email.pk)),
        ("List-Unsubscribe", f"<{tracking.unsubscribe_url(email)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    html_body = tracking.prepare_tracked_html(message=email, html=email.body_html, fresh=fresh)
    text_body = html_to_text(email.body_html)
    if _plain_ascii(mailbox.display_name, mailbox.email, *(value for _, value in headers)):
        raw = _ascii_message(mailbox=mailbox, headers=headers, text=text_body, html=html_body)
    else:
        raw = _encoded_message(mailbox=mailbox, headers=headers, text=text_body, html=html_body)
    return BuiltMessage(raw=raw, thread_id=thread_id, subject=subject, in_reply_to=in_reply_to, references=references)


def one_line(value: str) -> str:
    """A header value on one line: line breaks and other control characters become single spaces.

    Stops a subject with a stray newline (an LLM's trailing line break) from failing every attempt.
    """
    return _CONTROL_RUN.sub(" ", value).strip()


_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f]+")


def _plain_ascii(*values: str) -> bool:
    return all(value.isascii() for value in values)


def _encoded_message(*, mailbox: Mailbox, headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    """The message through the standard library's email package: any header that needs encoding."""
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(display_name=mailbox.display_name, addr_spec=mailbox.email)
    for name, value in headers:
        message[name] = value
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message.as_bytes()


# Header lines are folded to this length where they have spaces (RFC 5322's recommendation).
_FOLD_AT = 78
_MAX_LINE = 998


def _ascii_message(*, mailbox: Mailbox, headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    """The same message as `_encoded_message` when every header is plain ASCII, written directly.

    The email package spends milliseconds per message parsing the headers it is given back into
    objects; here nothing needs encoding, so each header is folded at spaces and written as is.
    The two parts are 7bit when they are ASCII with short lines, else quoted-printable.
    """
    boundary = f"=_oree_{secrets.token_hex(16)}"
    lines = [_header("From", formataddr((mailbox.display_name, mailbox.email)))]
    lines += [_header(name, value) for name, value in headers]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    head = "\r\n".join(lines).encode("ascii")
    parts = [_text_part(text, "plain"), _text_part(html, "html")]
    marker = f"--{boundary}".encode("ascii")
    if any(marker in part for part in parts):  # practically never: a new random boundary
        return _ascii_message(mailbox=mailbox, headers=headers, text=text, html=html)
    body = b"".join(marker + b"\r\n" + part + b"\r\n" for part in parts) + marker + b"--\r\n"
    return head + b"\r\n" + body


def _header(name: str, value: str) -> str:
    words = value.split(" ")
    lines, line = [], f"{name}: {words[0]}"
    for word in words[1:]:
        # Fold before a space, never leaving a line of white space alone; unfolding restores it.
        if word and len(line) + 1 + len(word) > _FOLD_AT:
            lines.append(line)
            line = f" {word}"
        else:
            line = f"{line} {word}"
    lines.append(line)
    if any(len(folded) > _MAX_LINE for folded in lines):
        raise ValueError(f"the {name} header has a word too long for one line")
    return "\r\n".join(lines)


def _text_part(content: str, subtype: str) -> bytes:
    # As the email package does it: lines split at CRLF, CR or LF, each ended by CRLF.
    lines = content.encode("utf-8").splitlines()
    if content.isascii() and all(len(line) <= _MAX_LINE for line in lines):
        encoding, payload = "7bit", b"".join(line + b"\r\n" for line in lines)
    else:
        encoded = binascii.b2a_qp(b"".join(line + b"\n" for line in lines), quotetabs=False, istext=True)
        encoding, payload = "quoted-printable", encoded.replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
    return head.encode("ascii") + payload
