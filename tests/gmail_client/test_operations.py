"""GmailClient operations against the sandbox."""

from __future__ import annotations

import datetime as dt

import pytest

from email_service.gmail.client import (
    QUEUE_ID_HEADER,
    GmailClient,
    NotFound,
    SentMessage,
)
from google_sandbox import FAULT_BACKEND_ERROR, OP_GET, GoogleSandbox
from google_sandbox.testing import TEST_ACCOUNT, make_message


def test_profile(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    before = client.get_profile()
    assert before.email_address == TEST_ACCOUNT
    assert (before.messages_total, before.threads_total) == (0, 0)
    client.send_raw(make_message())
    after = client.get_profile()
    assert after.messages_total == 1
    assert int(after.history_id) > int(before.history_id)


def test_send_reads_back_our_message_id(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    sent = client.send_raw(make_message(message_id="<q-42@oree.test>"))
    [stored] = google_sandbox.sent_messages(TEST_ACCOUNT)
    assert sent == SentMessage(
        gmail_id=stored.gmail_id,
        thread_id=stored.gmail_id,
        label_ids=("SENT",),
        rfc822_message_id="<q-42@oree.test>",
    )


def test_send_reads_back_the_message_id_gmail_replaced(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.set_replace_message_ids(TEST_ACCOUNT, True)
    sent = client.send_raw(make_message(message_id="<q-42@oree.test>"))
    [stored] = google_sandbox.sent_messages(TEST_ACCOUNT)
    assert sent.rfc822_message_id == stored.message_id
    assert sent.rfc822_message_id is not None and sent.rfc822_message_id.endswith("@mail.gmail.com>")


def test_failed_read_back_does_not_fail_the_send(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    google_sandbox.add_fault(OP_GET, FAULT_BACKEND_ERROR)
    sent = client.send_raw(make_message())
    assert sent.gmail_id
    assert sent.rfc822_message_id is None
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 1


def test_threading_with_thread_id(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    first = client.send_raw(make_message(message_id="<a@oree.test>"))
    follow_up = client.send_raw(
        make_message(
            subject="Re: Hello",
            message_id="<b@oree.test>",
            headers={"In-Reply-To": "<a@oree.test>", "References": "<a@oree.test>"},
        ),
        thread_id=first.thread_id,
    )
    assert follow_up.thread_id == first.thread_id
    reply = google_sandbox.deliver(
        TEST_ACCOUNT,
        make_message(
            to=TEST_ACCOUNT,
            sender="lead@prospect.test",
            message_id="<r@p.test>",
            headers={"In-Reply-To": "<b@oree.test>"},
        ),
    )
    thread = client.get_thread(first.thread_id, metadata_headers=["Message-ID"])
    assert thread.id == first.thread_id
    assert [m.id for m in thread.messages] == [first.gmail_id, follow_up.gmail_id, reply.gmail_id]
    assert [m.rfc822_message_id for m in thread.messages] == ["<a@oree.test>", "<b@oree.test>", "<r@p.test>"]
    assert thread.messages[2].label_ids == ("INBOX", "UNREAD")
    assert thread.history_id == thread.messages[-1].history_id


def test_find_sent_by_message_id(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    sent = client.send_raw(make_message(message_id="<find-me@oree.test>"))
    client.send_raw(make_message(message_id="<other@oree.test>"))
    # An inbound copy with the same Message-ID (e.g. a bounce quoting it) must not be taken for ours.
    google_sandbox.deliver(TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, message_id="<find-me@oree.test>"))
    assert client.find_sent_by_message_id("<find-me@oree.test>") == sent
    assert client.find_sent_by_message_id("find-me@oree.test") == sent
    assert client.find_sent_by_message_id("<nope@oree.test>") is None
    with pytest.raises(ValueError):
        client.find_sent_by_message_id("<>")


def test_find_sent_by_header(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    lead = "lead@prospect.test"
    wanted = None
    for n in range(4):
        sent = client.send_raw(
            make_message(to=lead, message_id=f"<m{n}@oree.test>", headers={QUEUE_ID_HEADER: f"queue-{n}"})
        )
        if n == 1:
            wanted = sent
    # Same queue id but another recipient: not a match for this lead.
    client.send_raw(
        make_message(to="someone@else.test", message_id="<x@oree.test>", headers={QUEUE_ID_HEADER: "queue-9"})
    )
    found = client.find_sent_by_header(lead, QUEUE_ID_HEADER, "queue-1")
    assert found == wanted
    assert client.find_sent_by_header(lead, QUEUE_ID_HEADER.lower(), "queue-3") is not None
    assert client.find_sent_by_header(lead, QUEUE_ID_HEADER, "queue-9") is None
    assert client.find_sent_by_header(lead, QUEUE_ID_HEADER, "queue-404") is None


def test_find_sent_by_header_pages_through_candidates(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    lead = "busy@prospect.test"
    first = client.send_raw(make_message(to=lead, message_id="<oldest@x>", headers={QUEUE_ID_HEADER: "oldest"}))
    for n in range(120):  # newer sent mail to the same lead, stored directly to keep the test fast
        filler = make_message(to=lead, message_id=f"<n{n}@x>", headers={QUEUE_ID_HEADER: f"n{n}"})
        google_sandbox.deliver(TEST_ACCOUNT, filler, label_ids=["SENT"])
    assert client.find_sent_by_header(lead, QUEUE_ID_HEADER, "oldest") == first  # on the second page
    assert client.find_sent_by_header(lead, QUEUE_ID_HEADER, "oldest", max_candidates=50) is None


def test_history_pages_and_stale_cursor(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    cursor = client.get_profile().history_id
    sent = [client.send_raw(make_message(message_id=f"<h{n}@x>")).gmail_id for n in range(4)]
    reply = google_sandbox.deliver(TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, message_id="<hr@x>"))
    added: list[str] = []
    page_token = None
    pages = 0
    while True:
        page = client.list_history(cursor, page_token, max_results=2)
        pages += 1
        added += [ref.id for record in page.records for ref in record.messages_added]
        page_token = page.next_page_token
        if page_token is None:
            break
    assert pages == 3
    assert added == [*sent, reply.gmail_id]
    assert page.history_id == client.get_profile().history_id
    inbox = client.list_history(cursor, label_id="INBOX")
    assert [r.messages_added[0].id for r in inbox.records] == [reply.gmail_id]
    assert inbox.records[0].messages_added[0].label_ids == ("INBOX", "UNREAD")
    assert client.list_history(page.history_id).records == ()

    google_sandbox.expire_history(TEST_ACCOUNT)
    with pytest.raises(NotFound):
        client.list_history(cursor)


def test_resync_from_recent_inbox_threads(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    out = client.send_raw(make_message(message_id="<o@x>"))
    old_reply = google_sandbox.deliver(
        TEST_ACCOUNT,
        make_message(to=TEST_ACCOUNT, body="first reply", message_id="<r1@p>", headers={"In-Reply-To": "<o@x>"}),
    )
    other = google_sandbox.deliver(TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, body="cold inbound", message_id="<c@p>"))
    threads = client.list_recent_inbox_threads(newer_than_days=7)
    assert [t.id for t in threads] == [other.thread_id, out.thread_id]
    assert threads[0].snippet == "cold inbound"
    assert old_reply.thread_id == out.thread_id
    assert client.list_recent_inbox_threads(max_threads=1) == threads[:1]


def test_get_message_formats(client: GmailClient, google_sandbox: GoogleSandbox) -> None:
    raw = make_message(body="Plain body", html="<p>HTML body</p>", headers={QUEUE_ID_HEADER: "q-7"})
    sent = client.send_raw(raw)
    stored = google_sandbox.sent_messages(TEST_ACCOUNT)[0]

    minimal = client.get_message(sent.gmail_id, format="minimal")
    assert minimal.headers == ()
    assert minimal.label_ids == ("SENT",)
    assert minimal.snippet == "Plain body"
    assert minimal.internal_date is not None
    assert abs(minimal.internal_date - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=10)
    assert minimal.size_estimate == len(stored.raw)
    assert minimal.history_id is not None

    metadata = client.get_message(sent.gmail_id, metadata_headers=[QUEUE_ID_HEADER])
    assert metadata.headers == ((QUEUE_ID_HEADER, "q-7"),)
    assert metadata.payload is None and metadata.raw is None

    full = client.get_message(sent.gmail_id, format="full")
    assert full.payload is not None
    assert full.payload.mime_type == "multipart/alternative"
    assert [p.mime_type for p in full.payload.parts] == ["text/plain", "text/html"]
    assert full.text_body is not None and full.text_body.strip() == "Plain body"
    assert full.html_body is not None and full.html_body.strip() == "<p>HTML body</p>"
    assert full.header("subject") == "Hello"
    assert full.rfc822_message_id == "<q-1@oree.test>"

    as_raw = client.get_message(sent.gmail_id, format="raw")
    assert as_raw.raw == stored.raw
    assert as_raw.header(QUEUE_ID_HEADER) == "q-7"
    assert as_raw.text_body is not None and as_raw.text_body.strip() == "Plain body"
    assert as_raw.html_body is not None and as_raw.html_body.strip() == "<p>HTML body</p>"
