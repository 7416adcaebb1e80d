"""Classifying inbound RFC 822 mail: reply, auto-reply or bounce (hard when 5.x.x, not final when 4.x.x)."""

from __future__ import annotations

import pytest

from email_service.inbound.replies import AUTO_REPLY, BOUNCE, REPLY, inbound_facts, parse_rfc822
from tests.tracking import inbound_mail

ORIGINAL = "<oree-1@company.test>"
ARGS = {"sender": "pat@prospect.test", "to": "sam@company.test", "original_id": ORIGINAL}


def facts(raw: bytes):
    return inbound_facts(parse_rfc822(raw))


def test_a_persons_reply_is_a_reply_with_its_text_and_references():
    found = facts(inbound_mail.person_reply(**ARGS))
    assert found.classification.kind == REPLY
    assert found.from_email == "pat@prospect.test"
    assert found.references == (ORIGINAL,)
    assert found.snippet.startswith("Hi Sam, Sounds interesting — can we talk Thursday?")


def test_gmails_vacation_responder_is_an_auto_reply():
    assert facts(inbound_mail.gmail_vacation(**ARGS)).classification.kind == AUTO_REPLY


@pytest.mark.parametrize("auto_submitted", [True, False])
def test_outlooks_automatic_reply_is_an_auto_reply_with_or_without_auto_submitted(auto_submitted):
    raw = inbound_mail.outlook_automatic_reply(**ARGS, auto_submitted=auto_submitted)
    assert facts(raw).classification.kind == AUTO_REPLY


@pytest.mark.parametrize(
    "header", ["X-Autoreply: yes", "X-Autorespond: yes", "Precedence: auto_reply", "Auto-Submitted: auto-generated"]
)
def test_each_auto_reply_header_is_enough(header):
    raw = inbound_mail.person_reply(**ARGS).replace(b"Subject:", header.encode() + b"\r\nSubject:")
    assert facts(raw).classification.kind == AUTO_REPLY


def test_auto_submitted_no_is_a_person():
    raw = inbound_mail.person_reply(**ARGS).replace(b"Subject:", b"Auto-Submitted: no\r\nSubject:")
    assert facts(raw).classification.kind == REPLY


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Quick question",
        "Abwesenheitsnotiz: Quick question",
        "Réponse automatique : Quick question",
        "Auto-Reply: Quick question",
    ],
)
def test_common_out_of_office_subjects_are_auto_replies(subject):
    raw = inbound_mail.person_reply(**ARGS, subject=subject)
    assert facts(raw).classification.kind == AUTO_REPLY


def test_a_reply_that_merely_mentions_the_office_is_a_person():
    raw = inbound_mail.person_reply(**ARGS, subject="Re: Quick question (back in the office Monday)")
    assert facts(raw).classification.kind == REPLY


def test_a_5xx_dsn_is_a_final_bounce_pointing_at_the_original():
    found = facts(
        inbound_mail.bounce_dsn(
            mailbox="sam@company.test", recipient="pat@prospect.test", original_id=ORIGINAL, status="5.1.1"
        )
    )
    assert (found.classification.kind, found.classification.bounce_status, found.classification.final) == (
        BOUNCE,
        "5.1.1",
        True,
    )
    assert ORIGINAL in found.references
    assert found.bounced_recipient == "pat@prospect.test"


def test_a_4xx_dsn_is_a_bounce_that_is_not_final():
    found = facts(
        inbound_mail.bounce_dsn(
            mailbox="sam@company.test", recipient="pat@prospect.test", original_id=ORIGINAL, status="4.2.2"
        )
    )
    assert (found.classification.kind, found.classification.bounce_status, found.classification.final) == (
        BOUNCE,
        "4.2.2",
        False,
    )


def test_a_plain_mailer_daemon_notice_without_a_report_is_a_bounce():
    raw = (
        b"From: MAILER-DAEMON@mx.prospect.test\r\nTo: sam@company.test\r\nSubject: Undelivered Mail Returned to "
        b"Sender\r\nContent-Type: text/plain\r\n\r\n<pat@prospect.test>: host said: 550 5.7.1 rejected\r\n"
    )
    found = facts(raw)
    assert (found.classification.kind, found.classification.bounce_status, found.classification.final) == (
        BOUNCE,
        "5.7.1",
        True,
    )


def test_a_malformed_message_still_classifies():
    assert facts(b"Subject: =?utf-8?q?broken\r\nFrom: <<<>>>\r\n\r\nhello").classification.kind == REPLY
