"""Every number of every dashboard route, from a known history built through record_event.

Alice's clock is Europe/Paris and "now" is frozen at 2026-04-05 12:00 CEST, one week after the
switch to summer time (2026-03-29 01:00 UTC). Her last 7 days are 30 March to 5 April, her last
30 days 7 March to 5 April, in her local calendar. Each message is placed to test one edge:

| msg | sent (UTC)        | local day | campaign / step | what happens                                   |
|-----|-------------------|-----------|-----------------|------------------------------------------------|
| A   | 04-05 07:00       | 04-05     | Spring / 1      | machine open, 2 human opens, click, reply       |
| B   | 03-29 22:30       | 03-30 *   | Spring / 2      | scanner click, human open on 04-02              |
| C   | 03-28 23:30       | 03-29 **  | Default / 1     | bounce a minute later                           |
| D   | 03-06 23:00:30    | 03-07 *** | Default / 1     | auto-reply 03-07, open and unsubscribe 03-31    |
| E   | 03-06 22:59       | 03-06     | Default / 1     | reply on 03-30                                  |
| F   | 01-10 12:00       | 01-10     | Spring / 1      | machine open, human click without an open       |

\\* UTC day 29 March, but 00:30 CEST: inside the 7 days only if summer time is applied.
\\** before the switch (CET, +1): 00:30 on the 29th, the day before the 7-day window.
\\*** 00:00:30 on the first day of the 30-day window; E, 89 seconds earlier, is outside it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command

from email_service.events.recording import record_event
from email_service.models import EmailSendQueue, Mailbox
from tests.conftest import dashboard_api
from tests.factories import CampaignFactory, EmailSendQueueFactory, LeadFactory, MailboxFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 4, 5, 10, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def history(alice, charlie, freeze_now):
    alice.timezone = "Europe/Paris"
    alice.save(update_fields=["timezone"])
    default = alice.campaigns.get(is_default=True)
    spring = CampaignFactory(client=alice, name="Spring")
    mailbox = MailboxFactory(client=alice, email="sdr@alice.test", sent_today=3, sent_today_date=date(2026, 4, 5))

    def send(name, sent_at, campaign, step):
        lead = LeadFactory(client=alice, email=f"{name.lower()}@prospect.test")
        message = EmailSendQueueFactory(
            client=alice,
            campaign=campaign,
            lead=lead,
            mailbox=mailbox,
            sequence_number=step,
            subject=f"Hello {name}",
            status=EmailSendQueue.Status.SENT,
            sent_at=at(sent_at),
        )
        record_event(message=message, event_type="sent", occurred_at=at(sent_at))
        return message

    def event(message, kind, when, **kwargs):
        record_event(message=message, event_type=kind, occurred_at=at(when), **kwargs)

    a = send("A", "2026-04-05 07:00", spring, 1)
    event(a, "open", "2026-04-05 07:00:05", is_machine=True, machine_reason="apple_mpp")
    event(a, "open", "2026-04-05 08:00")
    event(a, "open", "2026-04-05 09:00")
    event(a, "click", "2026-04-05 08:05")
    event(a, "reply", "2026-04-05 09:30", detail={"subject": "Re: Hello A", "snippet": "Sounds good"})

    b = send("B", "2026-03-29 22:30", spring, 2)
    event(b, "click", "2026-03-29 22:30:02", is_machine=True, machine_reason="scanner")
    event(b, "open", "2026-04-02 10:00")

    c = send("C", "2026-03-28 23:30", default, 1)
    event(c, "bounce", "2026-03-28 23:31", detail={"subject": "Delivery Status Notification", "snippet": "550"})

    d = send("D", "2026-03-06 23:00:30", default, 1)
    event(d, "auto_reply", "2026-03-07 08:00", detail={"subject": "Out of office", "snippet": "Back Monday"})
    event(d, "open", "2026-03-31 08:59")
    event(d, "unsubscribe", "2026-03-31 09:00")

    e = send("E", "2026-03-06 22:59", default, 1)
    event(e, "reply", "2026-03-30 10:00", detail={"subject": "Re: Hello E", "snippet": "Call me"})

    f = send("F", "2026-01-10 12:00", spring, 1)
    event(f, "open", "2026-01-10 12:00:01", is_machine=True, machine_reason="gmail_proxy")
    event(f, "click", "2026-01-10 13:00")

    # Queued but never sent: counts nowhere.
    EmailSendQueueFactory(client=alice, campaign=spring, mailbox=mailbox, sequence_number=3)
    # Charlie's own activity, on the same days, must never show up in Alice's numbers.
    theirs = EmailSendQueueFactory(client=charlie, status="sent", sent_at=at("2026-04-05 07:00"))
    record_event(message=theirs, event_type="sent", occurred_at=at("2026-04-05 07:00"))
    record_event(message=theirs, event_type="reply", occurred_at=at("2026-04-05 09:31"))

    api = dashboard_api(alice)
    freeze_now(NOW)
    return {"api": api, "default": default, "spring": spring, "mailbox": mailbox, "messages": (a, b, c, d, e, f)}


def metrics(sent, opens, clicks, replies, bounces, unsubscribes, machine_opens, machine_clicks):
    def pct(n):
        return round(100.0 * n / sent, 2) if sent else 0.0

    return {
        "emails_sent": sent,
        "opens": opens,
        "clicks": clicks,
        "replies": replies,
        "bounces": bounces,
        "unsubscribes": unsubscribes,
        "open_rate": pct(opens),
        "click_rate": pct(clicks),
        "reply_rate": pct(replies),
        "bounce_rate": pct(bounces),
        "machine_opens": machine_opens,
        "machine_clicks": machine_clicks,
    }


def test_stats_count_unique_human_messages_by_local_send_day_across_the_dst_change(history):
    body = history["api"].get("/api/client/stats").json()
    assert body == {
        "all_time": metrics(6, 3, 2, 2, 1, 1, 2, 1),
        "last_7_days": metrics(2, 2, 1, 1, 0, 0, 1, 1),
        "last_30_days": metrics(4, 3, 1, 1, 1, 1, 1, 1),
    }
    assert body["all_time"]["open_rate"] == 50.0
    assert body["all_time"]["click_rate"] == 33.33
    call_command("verify_rollups")


def test_campaigns_give_each_steps_numbers(history):
    body = history["api"].get("/api/client/campaigns").json()
    assert body == {
        "campaigns": [
            {
                "id": str(history["default"].pk),
                "name": "Default campaign",
                "status": "active",
                "is_default": True,
                "steps": [{"sequence_number": 1, **metrics(3, 1, 0, 1, 1, 1, 0, 0)}],
            },
            {
                "id": str(history["spring"].pk),
                "name": "Spring",
                "status": "active",
                "is_default": False,
                "steps": [
                    {"sequence_number": 1, **metrics(2, 1, 2, 1, 0, 0, 2, 0)},
                    {"sequence_number": 2, **metrics(1, 1, 0, 0, 0, 0, 0, 1)},
                ],
            },
        ]
    }
    call_command("verify_rollups")


def zero_day(day: date) -> dict[str, object]:
    return {"date": day.isoformat(), "sent": 0, "opens": 0, "clicks": 0, "replies": 0, "bounces": 0, "unsubscribes": 0}


def test_the_timeline_counts_events_on_their_local_day_with_zero_days(history):
    body = history["api"].get("/api/client/timeline", {"days": 7}).json()
    expected = [zero_day(date(2026, 3, 30) + timedelta(days=n)) for n in range(7)]
    expected[0].update(sent=1, replies=1)  # B sent 00:30 CEST; E's reply
    expected[1].update(opens=1, unsubscribes=1)  # D
    expected[3].update(opens=1)  # B
    expected[6].update(sent=1, opens=1, clicks=1, replies=1)  # A: two opens, one message
    assert body == {"days": expected}

    month = history["api"].get("/api/client/timeline", {"days": 30}).json()["days"]
    assert len(month) == 30
    assert (month[0]["date"], month[-1]["date"]) == ("2026-03-07", "2026-04-05")
    assert month[0] == {**zero_day(date(2026, 3, 7)), "sent": 1}  # D at 00:00:30; its auto-reply is not a reply
    assert month[22] == {**zero_day(date(2026, 3, 29)), "sent": 1, "bounces": 1}  # C
    assert month[23:] == expected
    assert all(day == zero_day(date.fromisoformat(day["date"])) for day in month[1:22])

    today = history["api"].get("/api/client/timeline", {"days": 1}).json()["days"]
    assert today == [expected[6]]
    call_command("verify_rollups")


def test_the_default_timeline_is_thirty_days(history):
    assert len(history["api"].get("/api/client/timeline").json()["days"]) == 30


def test_replies_are_newest_first_with_their_kind_and_paginated(history):
    a = history["messages"][0]
    first = history["api"].get("/api/client/replies", {"page_size": 2}).json()
    assert [(r["lead_email"], r["kind"]) for r in first["results"]] == [
        ("a@prospect.test", "reply"),
        ("e@prospect.test", "reply"),
    ]
    assert (first["page"], first["page_size"], first["has_next"]) == (1, 2, True)
    assert first["results"][0] == {
        "id": first["results"][0]["id"],
        "kind": "reply",
        "lead_id": str(a.lead_id),
        "lead_email": "a@prospect.test",
        "subject": "Re: Hello A",
        "snippet": "Sounds good",
        "received_at": "2026-04-05T09:30:00Z",
        "sequence_number": 1,
        "campaign_id": str(history["spring"].pk),
    }
    second = history["api"].get("/api/client/replies", {"page_size": 2, "page": 2}).json()
    assert [(r["lead_email"], r["kind"], r["subject"]) for r in second["results"]] == [
        ("c@prospect.test", "bounce", "Delivery Status Notification"),
        ("d@prospect.test", "auto_reply", "Out of office"),
    ]
    assert second["has_next"] is False
    beyond = history["api"].get("/api/client/replies", {"page_size": 2, "page": 3}).json()
    assert (beyond["results"], beyond["has_next"]) == ([], False)
    # The cursor walks the same feed at any depth.
    by_cursor = history["api"].get("/api/client/replies", {"page_size": 2, "cursor": first["next_cursor"]}).json()
    assert by_cursor["results"] == second["results"]
    assert (by_cursor["has_next"], by_cursor["next_cursor"]) == (False, None)


def test_mailboxes_show_todays_sends_against_the_effective_limit(history, alice):
    MailboxFactory(
        client=alice, email="old@alice.test", daily_limit=500, sent_today=50, sent_today_date=date(2026, 4, 4)
    )
    MailboxFactory(client=alice, email="gone@alice.test", status=Mailbox.Status.DISCONNECTED, last_error="revoked")
    alice.mailbox_daily_limit = 1200
    alice.save(update_fields=["mailbox_daily_limit"])
    rows = history["api"].get("/api/client/mailboxes").json()["mailboxes"]
    summary = [(m["email"], m["status"], m["sent_today"], m["daily_limit"], m["remaining_today"]) for m in rows]
    assert summary == [
        ("gone@alice.test", "disconnected", 0, 1200, 0),
        ("old@alice.test", "active", 0, 500, 500),  # yesterday's count does not carry over
        ("sdr@alice.test", "active", 3, 1200, 1197),
    ]
    assert rows[0]["last_error"] == "revoked"


def test_a_time_zone_change_moves_the_days_and_keeps_the_rollups_exact(history):
    api = history["api"]
    assert api.put("/api/client/settings", {"timezone": "America/New_York"}, format="json").status_code == 200
    # In New York, B was sent at 18:30 on 29 March: outside the 7 days now; A is on 5 April (03:00 EDT).
    body = api.get("/api/client/stats").json()
    assert body["last_7_days"] == metrics(1, 1, 1, 1, 0, 0, 1, 0)
    # D was sent at 18:00:30 on 6 March: outside the 30 days (7 March to 5 April); E too.
    assert body["last_30_days"] == metrics(3, 2, 1, 1, 1, 0, 1, 1)
    days = api.get("/api/client/timeline", {"days": 7}).json()["days"]
    assert days[0]["date"] == "2026-03-30" and days[0]["replies"] == 1 and days[0]["sent"] == 0
    call_command("verify_rollups")
