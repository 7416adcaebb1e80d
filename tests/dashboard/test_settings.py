"""A client's settings: the contract's defaults, partial updates, and a 400 naming each bad field."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

DEFAULTS = {
    "timezone": "UTC",
    "sending_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"},
    "min_gap_seconds": 0,
    "max_gap_seconds": 0,
    "mailbox_daily_limit": 2000,
    "open_tracking": True,
    "click_tracking": True,
    "pause_on_auto_reply": False,
}


def put(api, body):
    return api.put("/api/client/settings", body, format="json")


def test_a_new_client_has_the_contracts_defaults(alice_api):
    assert alice_api.get("/api/client/settings").json() == DEFAULTS


def test_a_partial_update_changes_only_the_given_fields_and_is_stored(alice, alice_api, charlie_api):
    response = put(
        alice_api,
        {
            "timezone": "Europe/Paris",
            "sending_window": {"days": ["fri", "mon"], "start": "08:30"},
            "max_gap_seconds": 120,
            "min_gap_seconds": 60,
            "mailbox_daily_limit": 150,
            "click_tracking": False,
        },
    )
    assert response.status_code == 200
    expected = DEFAULTS | {
        "timezone": "Europe/Paris",
        "sending_window": {"days": ["mon", "fri"], "start": "08:30", "end": "24:00"},
        "min_gap_seconds": 60,
        "max_gap_seconds": 120,
        "mailbox_daily_limit": 150,
        "click_tracking": False,
    }
    assert response.json() == expected
    assert alice_api.get("/api/client/settings").json() == expected
    alice.refresh_from_db()
    assert (alice.window_start_minute, alice.window_end_minute, alice.sending_days) == (510, 1440, ["mon", "fri"])
    assert charlie_api.get("/api/client/settings").json() == DEFAULTS
    assert put(alice_api, {"pause_on_auto_reply": True}).json() == expected | {"pause_on_auto_reply": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 5}, "timezone"),
        ({"sending_window": {"start": "18:00", "end": "09:00"}}, "sending_window"),
        ({"sending_window": {"start": "09:00", "end": "09:00"}}, "sending_window"),
        ({"sending_window": {"start": "24:00"}}, "sending_window.start"),
        ({"sending_window": {"end": "25:00"}}, "sending_window.end"),
        ({"sending_window": {"end": "9am"}}, "sending_window.end"),
        ({"sending_window": {"days": []}}, "sending_window.days"),
        ({"sending_window": {"days": ["mon", "funday"]}}, "sending_window.days"),
        ({"sending_window": {"days": ["mon", "mon"]}}, "sending_window.days"),
        ({"sending_window": {"tz": "UTC"}}, "sending_window.tz"),
        ({"sending_window": "always"}, "sending_window"),
        ({"min_gap_seconds": 30}, "min_gap_seconds"),  # above the current max of 0
        ({"min_gap_seconds": 90, "max_gap_seconds": 60}, "min_gap_seconds"),
        ({"max_gap_seconds": -1}, "max_gap_seconds"),
        ({"max_gap_seconds": "60"}, "max_gap_seconds"),
        ({"mailbox_daily_limit": 0}, "mailbox_daily_limit"),
        ({"mailbox_daily_limit": 2001}, "mailbox_daily_limit"),
        ({"mailbox_daily_limit": 10.5}, "mailbox_daily_limit"),
        ({"mailbox_daily_limit": True}, "mailbox_daily_limit"),
        ({"open_tracking": "yes"}, "open_tracking"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_value_is_a_400_naming_the_field_and_nothing_changes(alice_api, body, field):
    response = put(alice_api, {"click_tracking": False, **body})
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert set(response.json()) >= {"detail", "code"}
    assert alice_api.get("/api/client/settings").json() == DEFAULTS


def test_a_body_that_is_not_an_object_is_a_400(alice_api):
    assert put(alice_api, ["timezone"]).status_code == 400


def test_the_limits_of_each_range_are_accepted(alice_api):
    assert put(alice_api, {"mailbox_daily_limit": 1}).status_code == 200
    assert put(alice_api, {"mailbox_daily_limit": 2000}).status_code == 200
    assert put(alice_api, {"sending_window": {"start": "23:59", "end": "24:00"}}).status_code == 200
