"""The sandbox's Gmail endpoints: paths, shapes and semantics."""

from __future__ import annotations

import base64
import time
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from google_sandbox import GoogleSandbox
from google_sandbox.testing import (
    GMAIL_READONLY,
    GMAIL_SEND,
    TEST_ACCOUNT,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    Api,
    api_for,
    make_message,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def unb64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@pytest.fixture
def api(google_sandbox: GoogleSandbox) -> Api:
    return api_for(google_sandbox)


@pytest.mark.parametrize("trailing_slash", [True, False])
def test_discovery_client_reaches_the_sandbox_paths(google_sandbox: GoogleSandbox, trailing_slash: bool) -> None:
    tokens = google_sandbox.issue_tokens(TEST_ACCOUNT, [GMAIL_SEND, GMAIL_READONLY])
    creds = Credentials(
        tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        token_uri=google_sandbox.token_uri,
        client_id=TEST_CLIENT_ID,
        client_secret=TEST_CLIENT_SECRET,
    )
    endpoint = google_sandbox.gmail_endpoint if trailing_slash else google_sandbox.base_url
    service = build(
        "gmail",
        "v1",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": endpoint},
        http=google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=5)),
    )
    request = service.users().getProfile(userId="me")
    assert request.uri.startswith(google_sandbox.base_url + "/gmail/v1/users/me/profile")
    assert request.execute()["emailAddress"] == TEST_ACCOUNT
    sent = service.users().messages().send(userId="me", body={"raw": b64url(make_message())}).execute()
    got = service.users().messages().get(userId="me", id=sent["id"], format="metadata", metadataHeaders=["Subject"])
    assert got.execute()["payload"]["headers"] == [{"name": "Subject", "value": "Hello"}]
    history = service.users().history().list(userId="me", startHistoryId="1", historyTypes=["messageAdded"])
    assert "historyTypes=messageAdded" in history.uri
    service.close()


def test_profile_counts_and_history_id(google_sandbox: GoogleSandbox, api: Api) -> None:
    before = api.get("/profile").json()
    assert before["messagesTotal"] == 0
    api.send(make_message())
    after = api.get("/profile").json()
    assert after == {
        "emailAddress": TEST_ACCOUNT,
        "messagesTotal": 1,
        "threadsTotal": 1,
        "historyId": after["historyId"],
    }
    assert int(after["historyId"]) > int(before["historyId"])


def test_send_answers_like_gmail_and_keeps_our_message_id(google_sandbox: GoogleSandbox, api: Api) -> None:
    response = api.send(make_message(message_id="<ours@oree.test>"))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "threadId", "labelIds"}
    assert body["labelIds"] == ["SENT"]
    assert body["threadId"] == body["id"]
    assert len(body["id"]) == 16
    int(body["id"], 16)
    [stored] = google_sandbox.sent_messages(TEST_ACCOUNT)
    assert stored.gmail_id == body["id"]
    assert stored.message_id == "<ours@oree.test>"
    assert stored.text_body is not None and stored.text_body.strip() == "Hi there, quick question."


def test_replace_mode_and_missing_message_id_get_gmail_ids(google_sandbox: GoogleSandbox, api: Api) -> None:
    api.send(make_message(message_id=None))
    google_sandbox.set_replace_message_ids(TEST_ACCOUNT, True)
    raw = make_message(message_id="<ours@oree.test>", body="body stays byte-identical")
    api.send(raw)
    first, second = google_sandbox.sent_messages(TEST_ACCOUNT)
    for stored in (first, second):
        assert stored.message_id is not None
        assert stored.message_id.startswith("<CA")
        assert stored.message_id.endswith("@mail.gmail.com>")
    assert [k for k, _ in second.header_list].count("Message-ID") == 1
    assert second.raw.split(b"\n\n", 1)[1] == raw.split(b"\n\n", 1)[1]


def test_send_fills_from_and_date_when_missing(google_sandbox: GoogleSandbox, api: Api) -> None:
    raw = b"To: lead@prospect.test\r\nSubject: bare\r\n\r\nhello\r\n"
    assert api.send(raw).status_code == 200
    [stored] = google_sandbox.sent_messages(TEST_ACCOUNT)
    assert stored.headers["From"] == "Sam Sender <sender@example.com>"
    assert stored.headers["Date"].endswith("+0000")


def test_send_into_existing_thread_and_unknown_thread(google_sandbox: GoogleSandbox, api: Api) -> None:
    first = api.send(make_message()).json()
    reply = api.send(make_message(subject="Re: Hello", message_id="<q-2@oree.test>"), thread_id=first["threadId"])
    assert reply.json()["threadId"] == first["threadId"]
    missing = api.send(make_message(message_id="<q-3@oree.test>"), thread_id="ffffffffffffffff")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "errors": [{"message": "Requested entity was not found.", "domain": "global", "reason": "notFound"}],
            "status": "NOT_FOUND",
        }
    }
    assert len(google_sandbox.sent_messages(TEST_ACCOUNT)) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'raw' RFC822 payload message string or uploading message via /upload/* URL required"),
        ({"raw": "@@@not base64@@@"}, "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed"),
        ({"raw": b64url(b"Subject: nobody\r\n\r\nhi\r\n")}, "Recipient address required"),
    ],
)
def test_send_rejects_bad_messages_with_400(
    google_sandbox: GoogleSandbox, api: Api, body: dict[str, str], message: str
) -> None:
    response = api.post("/messages/send", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == message
    assert error["status"] == "INVALID_ARGUMENT"
    assert google_sandbox.sent_messages(TEST_ACCOUNT) == []


def test_send_needs_a_send_scope_and_reads_need_read_scopes(google_sandbox: GoogleSandbox) -> None:
    readonly = api_for(google_sandbox, scopes=(GMAIL_READONLY,))
    denied = readonly.send(make_message())
    assert denied.status_code == 403
    assert denied.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"
    send_only = api_for(google_sandbox, scopes=(GMAIL_SEND,))
    assert send_only.get("/messages").status_code == 403
    metadata = api_for(google_sandbox, scopes=("https://www.googleapis.com/auth/gmail.metadata",))
    assert metadata.get("/messages").status_code == 200
    assert metadata.get("/messages", q="in:sent").status_code == 403


def test_other_users_mailbox_is_delegation_denied(google_sandbox: GoogleSandbox, api: Api) -> None:
    google_sandbox.add_account("other@example.com")
    own = api.request("GET", google_sandbox.base_url + "/gmail/v1/users/sender%40example.com/profile")
    assert own.status_code == 200
    other = api.request("GET", google_sandbox.base_url + "/gmail/v1/users/other%40example.com/profile")
    assert other.status_code == 403
    assert other.json()["error"]["message"] == "Delegation denied for sender@example.com"


def test_missing_bearer_is_401_required(google_sandbox: GoogleSandbox) -> None:
    response = requests.get(google_sandbox.base_url + "/gmail/v1/users/me/profile", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["errors"][0]["reason"] == "required"


def test_unimplemented_gmail_method_says_so(google_sandbox: GoogleSandbox, api: Api) -> None:
    response = api.post("/messages/import", {})
    assert response.status_code == 501
    assert "does not implement" in response.json()["error"]["message"]


def send_to(api: Api, to: str, n: int) -> str:
    return str(api.send(make_message(to=to, message_id=f"<m{n}@oree.test>", subject=f"S{n}")).json()["id"])


def test_list_queries(google_sandbox: GoogleSandbox, api: Api) -> None:
    a = send_to(api, "Ann <ann@alpha.test>", 1)
    b = send_to(api, "bob@beta.test", 2)
    inbound = google_sandbox.deliver(
        TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, sender="ann@alpha.test", message_id="<in@alpha.test>")
    ).gmail_id

    def ids(q: str, **params: object) -> list[str]:
        response = api.get("/messages", q=q, **params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json().get("messages", [])]

    assert ids("rfc822msgid:m1@oree.test") == [a]
    assert ids("rfc822msgid:<m2@oree.test>") == [b]
    assert ids("to:ann@alpha.test") == [a]
    assert ids("to:alpha.test in:sent") == [a]
    assert ids("from:ann@alpha.test") == [inbound]
    assert ids("in:inbox") == [inbound]
    assert ids("in:sent") == [b, a]  # newest first
    assert ids("in:sent newer_than:1d") == [b, a]
    assert ids("in:sent newer_than:1h to:bob@beta.test") == [b]
    assert ids(f"after:{int(time.time()) + 60}") == []
    assert ids(f"after:{int(time.time()) - 60} -in:sent") == [inbound]
    assert ids("older_than:1d") == []
    assert ids("", labelIds="SENT") == [b, a]
    assert ids("S2") == [b]
    bad = api.get("/messages", q="has:attachment")
    assert bad.status_code == 400
    assert "has:" in bad.json()["error"]["message"]
    empty = api.get("/messages", q="to:nobody@nowhere.test").json()
    assert empty == {"resultSizeEstimate": 0}


def test_list_paging(google_sandbox: GoogleSandbox, api: Api) -> None:
    sent = [send_to(api, "x@x.test", n) for n in range(5)]
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, object] = {"maxResults": 2}
        if token:
            params["pageToken"] = token
        page = api.get("/messages", **params).json()
        assert page["resultSizeEstimate"] == 5
        seen += [m["id"] for m in page["messages"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == list(reversed(sent))


def test_get_formats(google_sandbox: GoogleSandbox, api: Api) -> None:
    raw = make_message(body="Plain & <simple> 'text'", html="<p>Plain</p>", headers={"X-Oree-Queue-Id": "q-9"})
    gid = api.send(raw).json()["id"]
    minimal = api.get(f"/messages/{gid}", format="minimal").json()
    assert set(minimal) == {"id", "threadId", "labelIds", "snippet", "sizeEstimate", "historyId", "internalDate"}
    assert minimal["snippet"] == "Plain &amp; &lt;simple&gt; &#39;text&#39;"
    assert abs(int(minimal["internalDate"]) - time.time() * 1000) < 10_000

    metadata = api.request(
        "GET",
        f"/messages/{gid}",
        params=[("format", "metadata"), ("metadataHeaders", "x-oree-queue-id"), ("metadataHeaders", "Message-ID")],
    ).json()
    assert metadata["payload"]["headers"] == [
        {"name": "Message-ID", "value": "<q-1@oree.test>"},
        {"name": "X-Oree-Queue-Id", "value": "q-9"},
    ]
    assert metadata["payload"]["mimeType"] == "multipart/alternative"

    full = api.get(f"/messages/{gid}").json()  # format defaults to full
    payload = full["payload"]
    assert payload["partId"] == ""
    assert payload["body"] == {"size": 0}
    assert [p["partId"] for p in payload["parts"]] == ["0", "1"]
    assert [p["mimeType"] for p in payload["parts"]] == ["text/plain", "text/html"]
    assert unb64url(payload["parts"][0]["body"]["data"]).decode().strip() == "Plain & <simple> 'text'"
    assert unb64url(payload["parts"][1]["body"]["data"]).decode().strip() == "<p>Plain</p>"
    assert {"name": "Subject", "value": "Hello"} in payload["headers"]

    as_raw = api.get(f"/messages/{gid}", format="raw").json()
    assert "payload" not in as_raw
    assert unb64url(as_raw["raw"]) == google_sandbox.sent_messages(TEST_ACCOUNT)[0].raw
    assert api.get("/messages/0000000000000000").status_code == 404
    assert api.get(f"/messages/{gid}", format="weird").status_code == 400


def test_deliver_threads_replies_like_gmail(google_sandbox: GoogleSandbox, api: Api) -> None:
    sent = api.send(make_message(message_id="<out-1@oree.test>")).json()
    reply = google_sandbox.deliver(
        TEST_ACCOUNT,
        make_message(
            to=TEST_ACCOUNT,
            sender="lead@prospect.test",
            subject="Re: Hello",
            message_id="<reply-1@prospect.test>",
            headers={"In-Reply-To": "<out-1@oree.test>", "References": "<out-1@oree.test>"},
        ),
    )
    assert reply.thread_id == sent["threadId"]
    assert reply.label_ids == ["INBOX", "UNREAD"]
    by_references = google_sandbox.deliver(
        TEST_ACCOUNT,
        make_message(
            to=TEST_ACCOUNT, message_id="<r2@p.test>", headers={"References": "<zzz@x> <reply-1@prospect.test>"}
        ),
    )
    assert by_references.thread_id == sent["threadId"]
    unrelated = google_sandbox.deliver(TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, message_id="<new@p.test>"))
    assert unrelated.thread_id == unrelated.gmail_id
    forced = google_sandbox.deliver(TEST_ACCOUNT, make_message(message_id="<f@p.test>"), thread_id=sent["threadId"])
    thread = api.get(f"/threads/{sent['threadId']}", format="minimal").json()
    assert [m["id"] for m in thread["messages"]] == [
        sent["id"],
        reply.gmail_id,
        by_references.gmail_id,
        forced.gmail_id,
    ]
    assert thread["historyId"] == thread["messages"][-1]["historyId"]
    threads = api.get("/threads", q="in:inbox").json()
    # ordered by their newest matching message: "forced" arrived last
    assert [t["id"] for t in threads["threads"]] == [sent["threadId"], unrelated.thread_id]
    assert api.get("/threads/ffffffffffffffff").status_code == 404


def test_history_paging_types_labels_and_expiry(google_sandbox: GoogleSandbox, api: Api) -> None:
    start = api.get("/profile").json()["historyId"]
    sent_ids = [send_to(api, "h@h.test", n) for n in range(3)]
    inbound = google_sandbox.deliver(TEST_ACCOUNT, make_message(to=TEST_ACCOUNT, message_id="<h-in@x>"))
    records: list[dict[str, Any]] = []
    token = None
    last_history_id = None
    while True:
        params: dict[str, object] = {"startHistoryId": start, "maxResults": 3}
        if token:
            params["pageToken"] = token
        page = api.get("/history", **params).json()
        records += page.get("history", [])
        last_history_id = page["historyId"]
        token = page.get("nextPageToken")
        if not token:
            break
    added = [r["messagesAdded"][0]["message"]["id"] for r in records]
    assert added == [*sent_ids, inbound.gmail_id]
    history_ids = [int(r["id"]) for r in records]
    assert history_ids == sorted(set(history_ids))
    assert all(isinstance(r["id"], str) for r in records)
    assert last_history_id == api.get("/profile").json()["historyId"]
    assert records[-1]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX", "UNREAD"]

    inbox_only = api.get("/history", startHistoryId=start, labelId="INBOX").json()
    assert [r["messagesAdded"][0]["message"]["id"] for r in inbox_only["history"]] == [inbound.gmail_id]
    assert "history" not in api.get("/history", startHistoryId=start, historyTypes="labelAdded").json()
    assert "history" not in api.get("/history", startHistoryId=last_history_id).json()

    google_sandbox.expire_history(TEST_ACCOUNT)
    stale = api.get("/history", startHistoryId=start)
    assert stale.status_code == 404
    assert stale.json()["error"]["status"] == "NOT_FOUND"
    current = api.get("/profile").json()["historyId"]
    fresh = api.get("/history", startHistoryId=current)
    assert fresh.status_code == 200
    newer = send_to(api, "h@h.test", 9)
    assert [
        r["messagesAdded"][0]["message"]["id"] for r in api.get("/history", startHistoryId=current).json()["history"]
    ] == [newer]
    assert api.get("/history").status_code == 400


def test_http_error_from_discovery_client_parses(google_sandbox: GoogleSandbox) -> None:
    """googleapiclient reads our error bodies the way it reads Google's."""
    creds = Credentials("ya29.unknown")
    service = build(
        "gmail",
        "v1",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": google_sandbox.gmail_endpoint},
        http=google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=5), max_refresh_attempts=0),
    )
    with pytest.raises(HttpError) as caught:
        service.users().getProfile(userId="me").execute()
    assert caught.value.status_code == 401
    assert caught.value.error_details[0]["reason"] == "authError"
    service.close()
