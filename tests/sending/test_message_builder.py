"""The MIME message: headers, unsubscribe, text part, and threading of follow-ups."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from email_service.sending.message_builder import (
    _ascii_message,
    _encoded_message,
    build_message,
    html_to_text,
    new_message_id,
    thread_subject,
)
from tests.factories import EmailSendQueueFactory

pytestmark = pytest.mark.django_db


def built(email, mailbox):
    email.message_id = new_message_id(email=email, mailbox=mailbox)
    result = build_message(email=email, mailbox=mailbox)
    return result, message_from_bytes(result.raw, policy=policy.default)


def test_a_first_step_carries_every_header_and_a_text_twin(settings, alice, alice_mailbox):
    settings.PUBLIC_BASE_URL = "https://app.oree.test"
    email = EmailSendQueueFactory(
        client=alice,
        mailbox=alice_mailbox,
        subject="Quick question",
        body_html="<p>Hi Pat,</p><p>See <a href='https://alice.test/x'>our demo</a> &amp; reply.</p>"
        "<script>bad()</script>",
    )
    result, parsed = built(email, alice_mailbox)
    assert parsed["From"] == '"Sam from Alice" <sam@alice.test>' or parsed["From"] == "Sam from Alice <sam@alice.test>"
    assert parsed["To"] == email.recipient_email
    assert parsed["Subject"] == "Quick question"
    assert parsed["Date"]
    assert parsed["Message-ID"] == email.message_id and email.message_id.endswith("@alice.test>")
    assert parsed["X-Oree-Queue-Id"] == str(email.pk)
    assert parsed["List-Unsubscribe"] == f"<https://app.oree.test/u/{email.unsubscribe_token}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["In-Reply-To"] is None and result.thread_id is None
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",)).get_content()
    assert "Hi Pat," in text and "our demo (https://alice.test/x) & reply." in text and "bad()" not in text
    # The HTML part goes through the tracking seam: the link now points at our click URL
    # (quoting kept), and the stored destination is the byte-exact original.
    html = parsed.get_body(("html",)).get_content()
    link = email.links.get()
    assert link.url == "https://alice.test/x"
    assert f"<a href='https://app.oree.test/api/track/click/{link.token}'>" in html


def test_a_display_name_with_accents_and_commas_is_encoded_properly(alice, alice_mailbox):
    alice_mailbox.display_name = "Zoé, Sales"
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox)
    _, parsed = built(email, alice_mailbox)
    assert parsed["From"].addresses[0].display_name == "Zoé, Sales"
    assert parsed["From"].addresses[0].addr_spec == "sam@alice.test"


def test_a_follow_up_threads_under_the_message_id_gmail_stored(alice, alice_mailbox):
    first = EmailSendQueueFactory(
        client=alice,
        mailbox=alice_mailbox,
        subject="Quick question",
        status="sent",
        gmail_thread_id="thread-1",
        message_id="<ours@alice.test>",
        rfc_message_id="<gmails@mail.gmail.com>",
    )
    second = EmailSendQueueFactory(client=alice, lead=first.lead, mailbox=alice_mailbox, sequence_number=2, subject="")
    result, parsed = built(second, alice_mailbox)
    assert result.thread_id == "thread-1"
    assert parsed["Subject"] == "Re: Quick question"
    assert parsed["In-Reply-To"] == "<gmails@mail.gmail.com>"
    assert parsed["References"] == "<gmails@mail.gmail.com>"
    second.status, second.gmail_thread_id, second.rfc_message_id = "sent", "thread-1", "<two@mail.gmail.com>"
    second.subject, second.references = result.subject, result.references
    second.save()
    third = EmailSendQueueFactory(
        client=alice, lead=first.lead, mailbox=alice_mailbox, sequence_number=3, subject="RE: quick question"
    )
    result, parsed = built(third, alice_mailbox)
    assert parsed["Subject"] == "Re: Quick question"
    assert parsed["References"] == "<gmails@mail.gmail.com> <two@mail.gmail.com>"
    assert parsed["In-Reply-To"] == "<two@mail.gmail.com>"


def test_a_different_subject_starts_a_new_thread():
    from email_service.models import EmailSendQueue

    previous = EmailSendQueue(subject="Quick question", gmail_thread_id="t")
    assert thread_subject(requested="Something else", previous=previous) == ("Something else", False)
    assert thread_subject(requested="", previous=None) == ("(no subject)", False)


def test_html_to_text_keeps_lines_and_lists():
    assert html_to_text("<ul><li>One</li><li>Two</li></ul>Bye<br>Sam") == "- One\n\n- Two\nBye\nSam\n"


REFERENCES = " ".join(f"<{n:032x}.abcdef012345@alice.test>" for n in range(20))


@pytest.mark.parametrize(
    ("subject", "text", "html"),
    [
        ("Quick question", "Hi Pat,\n", "<p>Hi Pat,</p>"),
        ("A long subject " * 20, "x" * 2000 + "\n", "<p>" + "y" * 5000 + "</p>"),
        ("Café? only in the body", "Zoë \U0001f44b\n", "<p>Köln &amp; Zürich \U0001f44b</p>\r\n<p>two</p>"),
        ("Spaces  kept   as   sent", "trailing spaces   \nFrom the start\n.\n", "<p>a\rb</p>\t\n"),
    ],
)
def test_the_direct_ascii_writer_gives_the_message_the_email_package_gives(alice_mailbox, subject, text, html):
    headers = [
        ("To", "pat@prospect.test"),
        ("Subject", subject.strip()),
        ("Date", "Fri, 27 Nov 2026 22:00:00 +0000"),
        ("Message-ID", "<0123456789abcdef0123456789abcdef.0123456789ab@alice.test>"),
        ("In-Reply-To", "<00000000000000000000000000000013.abcdef012345@alice.test>"),
        ("References", REFERENCES),
        ("X-Oree-Queue-Id", "01234567-89ab-cdef-0123-456789abcdef"),
        ("List-Unsubscribe", "<https://app.oree.test/u/abcdefghijklmnopqrstuv>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if not subject.isascii():
        headers[1] = ("Subject", "Plain")
    direct = _ascii_message(mailbox=alice_mailbox, headers=headers, text=text, html=html)
    standard = _encoded_message(mailbox=alice_mailbox, headers=headers, text=text, html=html)
    ours, theirs = (message_from_bytes(raw, policy=policy.default) for raw in (direct, standard))
    for name in ["From", "MIME-Version", *(name for name, _ in headers)]:
        assert str(ours[name]) == str(theirs[name]), name
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        mine, standard_part = ours.get_body((kind,)), theirs.get_body((kind,))
        assert mine.get_content() == standard_part.get_content()
        assert mine.get_content_charset() == "utf-8"
    # On the wire: CRLF line ends only, no line over 998 octets, folded headers unfold to the value.
    assert b"\n" not in direct.replace(b"\r\n", b"") and b"\r" not in direct.replace(b"\r\n", b"")
    assert max(len(line) for line in direct.split(b"\r\n")) <= 998
    assert ours["References"] == REFERENCES and len(ours["References"]) > 998


def test_a_subject_with_line_breaks_goes_out_on_one_line(alice, alice_mailbox):
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox, subject="Quick\r\nquestion\n\tfor you\n")
    result, parsed = built(email, alice_mailbox)
    assert parsed["Subject"] == "Quick question for you" == result.subject


def test_a_non_ascii_subject_goes_through_the_email_package_encoded(alice, alice_mailbox):
    email = EmailSendQueueFactory(client=alice, mailbox=alice_mailbox, subject="Café à Zürich \U0001f44b")
    result, parsed = built(email, alice_mailbox)
    assert b"=?utf-8?" in result.raw.split(b"\r\n\r\n", 1)[0]
    assert parsed["Subject"] == "Café à Zürich \U0001f44b"
