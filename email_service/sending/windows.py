"""Send windows: when a client's emails may leave, in the client's own IANA time zone.

A window is a set of weekdays and a local start/end time ("24:00" runs to midnight). Days are
walked as *calendar dates* and each local boundary is turned into an instant on its own, so a
daylight-saving change moves an opening by an hour but never skips or repeats a day. A local
time that does not exist (the spring-forward gap) resolves to the instant just after the gap; an
ambiguous one (fall-back) to its first occurrence.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from email_service.models import ALL_WEEKDAYS, Client

# A window with at least one day opens within a week; 8 days covers "today, too late" + 7.
_DAYS_AHEAD = 8


@dataclass(frozen=True)
class SendWindow:
    """A client's weekly window: weekday names, start and end minute after local midnight, zone."""

    days: frozenset[str]
    start_minute: int
    end_minute: int
    zone: zoneinfo.ZoneInfo

    @classmethod
    def for_client(cls, client: Client) -> SendWindow:
        return cls(
            days=frozenset(day for day in client.sending_days if day in ALL_WEEKDAYS),
            start_minute=client.window_start_minute,
            end_minute=client.window_end_minute,
            zone=client_zone(client.timezone),
        )

    @property
    def always_open(self) -> bool:
        return len(self.days) == 7 and self.start_minute == 0 and self.end_minute >= 1440

    def _instant(self, day: date, minute: int) -> datetime:
        if minute >= 1440:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
        # Round-trip through UTC: a wall time inside a DST gap becomes a real instant after it.
        return local.astimezone(UTC)

    def bounds(self, day: date) -> tuple[datetime, datetime] | None:
        """The window's opening and closing instants on a local calendar day, or None if closed that day."""
        if ALL_WEEKDAYS[day.weekday()] not in self.days:
            return None
        opens, closes = self._instant(day, self.start_minute), self._instant(day, self.end_minute)
        if closes <= opens:  # a window squeezed to nothing by a DST gap
            return None
        return opens, closes

    def next_opening(self, at: datetime) -> datetime | None:
        """`at` itself when the window is open then, else the next instant it opens; None if it never opens."""
        if self.always_open:
            return at
        local_day = at.astimezone(self.zone).date()
        for offset in range(-1, _DAYS_AHEAD):
            # Start a day early: yesterday's window may run past local midnight after a DST shift.
            found = self.bounds(local_day + timedelta(days=offset))
            if found is None:
                continue
            opens, closes = found
            if at < opens:
                return opens
            if at < closes:
                return at
        return None

    def is_open(self, at: datetime) -> bool:
        return self.next_opening(at) == at


def client_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def local_today(client: Client, at: datetime) -> date:
    """The client's local calendar day at `at`: the day a mailbox's daily cap counts."""
    return at.astimezone(client_zone(client.timezone)).date()


def next_local_midnight(client: Client, at: datetime) -> datetime:
    """The instant the client's next local day begins (when a daily limit lifts)."""
    zone = client_zone(client.timezone)
    tomorrow = at.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0, 0), tzinfo=zone).astimezone(UTC)


def scheduled_for(*, client: Client, not_before: datetime) -> datetime | None:
    """The first moment at or after `not_before` when the client's window is open (None: never)."""
    return SendWindow.for_client(client).next_opening(not_before)
