"""RFC 822 handling for the sandbox: parsing, Gmail payload trees, header surgery."""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import secrets
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
SNIPPET_LENGTH = 200


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 with padding, as Gmail emits it."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode URL-safe (or standard) base64, with or without padding.

    Raises ``ValueError`` on anything that is not base64.
    """
    cleaned = "".join(text.split())
    cleaned = cleaned.replace("+", "-").replace("/", "_")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def header_list(message: Message) -> list[tuple[str, str]]:
    """Every header in order, decoded (RFC 2047) and unfolded, as Gmail's API shows them."""
    return [(name, _SPACE_RE.sub(" ", str(value)).strip()) for name, value in message.items()]


def first_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers:
        result.setdefault(name, value)
    return result


def get_header(headers: list[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def addresses(headers: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    """(display name, address) pairs from the named address headers."""
    wanted = {n.lower() for n in names}
    values = [v for k, v in headers if k.lower() in wanted]
    return [(n, a) for n, a in email.utils.getaddresses(values) if a or n]


def _decoded_text(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def bodies(message: Message) -> tuple[str | None, str | None]:
    """The first inline text/plain and text/html bodies."""
    text: str | None = None
    html: str | None = None
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and text is None:
            text = _decoded_text(part)
        elif ctype == "text/html" and html is None:
            html = _decoded_text(part)
    return text, html


def snippet(text: str | None, html: str | None) -> str:
    """Gmail-like snippet: whitespace collapsed, HTML-escaped, ~200 chars."""
    source = text if text is not None else _TAG_RE.sub(" ", html or "")
    plain = _SPACE_RE.sub(" ", source).strip()[:SNIPPET_LENGTH]
    return (
        plain.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def payload_tree(part: Message, part_id: str = "") -> dict[str, Any]:
    """Gmail's ``payload`` object (format=full) for a message or one of its parts."""
    headers = [{"name": k, "value": v} for k, v in header_list(part)]
    node: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": headers,
    }
    if part.is_multipart():
        node["body"] = {"size": 0}
        children = part.get_payload()
        assert isinstance(children, list)
        prefix = f"{part_id}." if part_id else ""
        node["parts"] = [payload_tree(child, f"{prefix}{i}") for i, child in enumerate(children)]
    else:
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = b""
        node["body"] = {"size": len(data), "data": b64url_encode(data)} if data else {"size": 0}
    return node


def metadata_payload(message: Message, wanted: list[str] | None) -> dict[str, Any]:
    """Gmail's ``payload`` for format=metadata: mimeType and (filtered) headers."""
    names = {w.lower() for w in wanted} if wanted else None
    headers = [{"name": k, "value": v} for k, v in header_list(message) if names is None or k.lower() in names]
    return {"partId": "", "mimeType": message.get_content_type(), "filename": "", "headers": headers}


def new_gmail_message_id() -> str:
    """A Message-ID shaped like the ones Gmail assigns."""
    token = secrets.token_urlsafe(36).replace("-", "+").replace("_", "=")
    return f"<CA{token}@mail.gmail.com>"


def _split_head(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """Split raw bytes into header lines (with endings), the separator and the body."""
    candidates = [(raw.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n")]
    found = [(pos, sep) for pos, sep in candidates if pos >= 0]
    if not found:
        return raw.splitlines(keepends=True), b"", b""
    pos, sep = min(found)
    eol = sep[: len(sep) // 2]
    head = raw[:pos]
    lines = head.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += eol
    return lines, eol, raw[pos + len(sep) :]


def _eol(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:4096] else b"\n"


def replace_header(raw: bytes, name: str, value: str) -> bytes:
    """Remove every ``name`` header (with its folded lines) and put one new one on top.

    The body and every other header stay byte-for-byte as they were.
    """
    lines, sep_eol, body = _split_head(raw)
    eol = sep_eol or _eol(raw)
    wanted = name.lower().encode("ascii") + b":"
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(wanted) or line.lower().startswith(name.lower().encode("ascii") + b" :")
        if not skipping:
            kept.append(line)
    new_line = f"{name}: {value}".encode() + eol
    return new_line + b"".join(kept) + eol + body


def add_header_if_missing(raw: bytes, name: str, value: str) -> bytes:
    if get_header(header_list(parse(raw)), name) is not None:
        return raw
    return replace_header(raw, name, value)
