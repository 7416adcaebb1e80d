"""Pure helpers: header surgery and the search-language subset."""

from __future__ import annotations

import pytest

from google_sandbox import mime
from google_sandbox.query import QueryError, Searchable, compile_query


def test_replace_header_removes_folded_copies_and_keeps_the_rest_byte_for_byte() -> None:
    raw = (
        b"Subject: hi\r\nMessage-ID:\r\n <old@x>\r\nmessage-id: <dup@x>\r\nTo: a@b.test\r\n"
        b"\r\nbody line 1\r\n\r\nbody Message-ID: <not-a-header@x>\r\n"
    )
    out = mime.replace_header(raw, "Message-ID", "<new@y>")
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [b"Message-ID: <new@y>", b"Subject: hi", b"To: a@b.test"]
    assert body == b"body line 1\r\n\r\nbody Message-ID: <not-a-header@x>\r\n"


def test_replace_header_keeps_lf_line_endings() -> None:
    out = mime.replace_header(b"To: a@b.test\n\nhi\n", "Message-ID", "<n@y>")
    assert out == b"Message-ID: <n@y>\nTo: a@b.test\n\nhi\n"


def test_gmail_style_message_ids_are_unique_and_shaped() -> None:
    ids = {mime.new_gmail_message_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("<CA") and i.endswith("@mail.gmail.com>") for i in ids)


def test_b64url_decode_tolerates_padding_and_rejects_garbage() -> None:
    assert mime.b64url_decode("aGk") == b"hi"
    assert mime.b64url_decode("aGk=") == b"hi"
    with pytest.raises(ValueError):
        mime.b64url_decode("!!!")


def searchable(**overrides: object) -> Searchable:
    values: dict[str, object] = {
        "label_ids": frozenset({"SENT"}),
        "headers": [("Subject", "Quarterly numbers")],
        "addresses": {"to": [("Ann", "ann@alpha.test")], "from": [("", "me@x.test")]},
        "text": "quarterly numbers attached",
        "internal_date_ms": 1_000_000_000_000,
        "message_id": "<abc@x>",
    }
    values.update(overrides)
    return Searchable(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("rfc822msgid:abc@x", True),
        ("rfc822msgid:<ABC@x>", True),
        ("rfc822msgid:abd@x", False),
        ("to:ann", True),
        ("to:Ann from:me@x.test in:sent", True),
        ("-in:sent", False),
        ("subject:quarterly", True),
        ('"numbers attached"', True),
        ("after:999999999 before:1000000001", True),
        ("after:2001/09/09 before:2001/09/10", True),  # 1e9 s is 2001-09-09 01:46:40 UTC
        ("after:2001/09/10 AND before:2001/09/09", False),
        ("is:unread", False),
        ("label:sent", True),
    ],
)
def test_query_terms(q: str, expected: bool) -> None:
    assert compile_query(q, now=1_000_000_100)(searchable()) is expected


def test_newer_than_units() -> None:
    now = 1_000_000_000.0
    message = searchable(internal_date_ms=int((now - 7200) * 1000))
    assert compile_query("newer_than:3h", now=now)(message)
    assert not compile_query("newer_than:1h", now=now)(message)
    assert compile_query("newer_than:1d", now=now)(message)
    assert compile_query("older_than:1h", now=now)(message)


@pytest.mark.parametrize("q", ["has:attachment", "newer_than:7w", "in:chats", "a OR b", "after:yesterday"])
def test_unsupported_queries_are_refused_not_ignored(q: str) -> None:
    with pytest.raises(QueryError):
        compile_query(q)
