"""A client's own settings: time zone, sending window, pacing gaps, daily limit, tracking switches.

`client_settings` gives them in CONTRACT.md's shape; `update_client_settings` takes any subset,
validates each field (InvalidInput naming it) against the merged result, and saves in one go.
A time zone change re-keys the client's daily rollups to the new local days.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from email_service.dashboard.sessions import check_timezone
from email_service.exceptions import InvalidInput
from email_service.models import ALL_WEEKDAYS, Client

MAX_GAP_SECONDS = 86_400
DAILY_LIMIT_RANGE = (1, 2000)
SETTINGS_FIELDS = (
    "timezone",
    "sending_window",
    "min_gap_seconds",
    "max_gap_seconds",
    "mailbox_daily_limit",
    "open_tracking",
    "click_tracking",
    "pause_on_auto_reply",
)
_BOOLEAN_FIELDS = ("open_tracking", "click_tracking", "pause_on_auto_reply")
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_minute(value: object, *, field: str) -> int:
    """'HH:MM' → minutes after midnight; '24:00' is the end of the day."""
    match = _TIME.match(value) if isinstance(value, str) else None
    minute = int(match.group(1)) * 60 + int(match.group(2)) if match else -1
    if not 0 <= minute <= 1440:
        raise InvalidInput(f"{field} must be a time 'HH:MM' between 00:00 and 24:00.", field=field, code="invalid_time")
    return minute


def client_settings(*, client: Client) -> dict[str, Any]:
    return {
        "timezone": client.timezone,
        "sending_window": {
            "days": [day for day in ALL_WEEKDAYS if day in client.sending_days],
            "start": format_minute(client.window_start_minute),
            "end": format_minute(client.window_end_minute),
        },
        "min_gap_seconds": client.min_gap_seconds,
        "max_gap_seconds": client.max_gap_seconds,
        "mailbox_daily_limit": client.mailbox_daily_limit,
        "open_tracking": client.open_tracking,
        "click_tracking": client.click_tracking,
        "pause_on_auto_reply": client.pause_on_auto_reply,
    }


def _integer(value: object, *, field: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer.", field=field, code="invalid_integer")
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be between {minimum} and {maximum}.", field=field, code="out_of_range")
    return value


def _window(value: object, client: Client) -> tuple[list[str], int, int]:
    field = "sending_window"
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object with days, start and end.", field=field, code="invalid")
    unknown = sorted(set(value) - {"days", "start", "end"})
    if unknown:
        raise InvalidInput(f"Unknown field {field}.{unknown[0]}.", field=f"{field}.{unknown[0]}", code="unknown_field")
    days = value.get("days", client.sending_days)
    if (
        not isinstance(days, list)
        or not days
        or any(day not in ALL_WEEKDAYS for day in days)
        or len(set(days)) != len(days)
    ):
        raise InvalidInput(
            f"{field}.days must be a non-empty list of distinct weekdays among {', '.join(ALL_WEEKDAYS)}.",
            field=f"{field}.days",
            code="invalid_days",
        )
    start = parse_minute(value["start"], field=f"{field}.start") if "start" in value else client.window_start_minute
    end = parse_minute(value["end"], field=f"{field}.end") if "end" in value else client.window_end_minute
    if start >= 1440:
        raise InvalidInput(f"{field}.start must be before 24:00.", field=f"{field}.start", code="invalid_time")
    if start >= end:
        raise InvalidInput(f"{field} is empty or inverted: start must be before end.", field=field, code="empty_window")
    return [day for day in ALL_WEEKDAYS if day in days], start, end


def update_client_settings(*, client: Client, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and apply any subset of the settings; nothing is saved unless every field is valid."""
    from email_service.events.rollups import rebuild_rollups

    unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown setting {unknown[0]}.", field=unknown[0], code="unknown_field")
    with transaction.atomic():
        # Locked: a concurrent update or event recording sees either the old or the new settings.
        locked = Client.objects.select_for_update().get(pk=client.pk)
        old_timezone = locked.timezone
        if "timezone" in changes:
            value = changes["timezone"]
            if not isinstance(value, str) or not value:
                raise InvalidInput(
                    "timezone must be an IANA time zone name.", field="timezone", code="invalid_timezone"
                )
            locked.timezone = check_timezone(value)
        if "sending_window" in changes:
            locked.sending_days, locked.window_start_minute, locked.window_end_minute = _window(
                changes["sending_window"], locked
            )
        for field in ("min_gap_seconds", "max_gap_seconds"):
            if field in changes:
                setattr(locked, field, _integer(changes[field], field=field, minimum=0, maximum=MAX_GAP_SECONDS))
        if locked.min_gap_seconds > locked.max_gap_seconds:
            field = "min_gap_seconds" if "min_gap_seconds" in changes else "max_gap_seconds"
            raise InvalidInput("min_gap_seconds must not exceed max_gap_seconds.", field=field, code="gap_inverted")
        if "mailbox_daily_limit" in changes:
            low, high = DAILY_LIMIT_RANGE
            locked.mailbox_daily_limit = _integer(
                changes["mailbox_daily_limit"], field="mailbox_daily_limit", minimum=low, maximum=high
            )
        for field in _BOOLEAN_FIELDS:
            if field in changes:
                if not isinstance(changes[field], bool):
                    raise InvalidInput(f"{field} must be true or false.", field=field, code="invalid_boolean")
                setattr(locked, field, changes[field])
        locked.save()
        if locked.timezone != old_timezone:
            rebuild_rollups(client=locked)
    for field in ("timezone", "sending_days", "window_start_minute", "window_end_minute", *SETTINGS_FIELDS[2:]):
        setattr(client, field, getattr(locked, field))
    return client_settings(client=locked)
