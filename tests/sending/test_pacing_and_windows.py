"""Pace, daily cap (client-local day, with and without the midnight reset) and send windows across DST."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from email_service.models import Mailbox
from email_service.sending import pacing
from email_service.sending.windows import SendWindow
from tests.factories import ClientFactory, MailboxFactory

T0 = datetime(2030, 3, 5, 12, 0, tzinfo=UTC)


def reserve(mailbox, at, gap=0.0):
    mailbox.refresh_from_db()
    return pacing.reserve_send_slot(mailbox=mailbox, client=mailbox.client, now=at, gap_seconds=gap)


@pytest.mark.django_db
def test_two_sends_are_at_least_nine_tenths_of_an_interval_apart_and_the_average_never_exceeds_the_rate():
    mailbox = MailboxFactory(max_sends_per_second=2.5)
    assert reserve(mailbox, T0) is not None
    assert reserve(mailbox, T0 + timedelta(seconds=0.35)) is None
    second = reserve(mailbox, T0 + timedelta(seconds=0.36))
    assert second is not None
    # Back on the 0.4 s schedule: the next slot is one interval after the previous *slot*.
    assert second.next_send_at == T0 + timedelta(seconds=0.76)
    assert reserve(mailbox, T0 + timedelta(seconds=0.75)) is None
    granted, at = [], T0 + timedelta(seconds=0.76)
    for _ in range(200):  # always asking the moment the slot opens, sometimes a little late
        slot = reserve(mailbox, at)
        assert slot is not None
        granted.append(at)
        at = slot.next_send_at + timedelta(milliseconds=random.choice([0, 0, 5, 30]))
    span = (granted[-1] - granted[0]).total_seconds()
    assert (len(granted) - 1) / span <= 2.5
    assert min((b - a).total_seconds() for a, b in itertools.pairwise(granted)) >= 0.36 - 1e-6


@pytest.mark.django_db
def test_the_global_ceiling_caps_a_mailbox_configured_faster(settings):
    settings.MAILBOX_MAX_SENDS_PER_SECOND = 2.5
    mailbox = MailboxFactory(max_sends_per_second=50)
    assert reserve(mailbox, T0) is not None
    assert reserve(mailbox, T0 + timedelta(seconds=0.3)) is None


@pytest.mark.django_db
def test_the_gap_with_jitter_stays_between_the_clients_min_and_max():
    client = ClientFactory(min_gap_seconds=30, max_gap_seconds=90)
    rng = random.Random(7)
    gaps = [pacing.draw_gap_seconds(client=client, rng=rng) for _ in range(200)]
    assert min(gaps) >= 30 and max(gaps) <= 90
    assert max(gaps) - min(gaps) > 30  # jitter, not a constant
    mailbox = MailboxFactory(client=client)
    slot = reserve(mailbox, T0, gap=45.0)
    assert slot.next_send_at == T0 + timedelta(seconds=45)
    assert reserve(mailbox, T0 + timedelta(seconds=44.9)) is None
    assert reserve(mailbox, T0 + timedelta(seconds=45)) is not None


@pytest.mark.django_db
def test_the_daily_cap_holds_and_the_next_local_day_starts_again_without_any_reset_run():
    client = ClientFactory(timezone="America/New_York", mailbox_daily_limit=2000)
    mailbox = MailboxFactory(client=client, daily_limit=3, max_sends_per_second=2.5)
    evening = datetime(2030, 3, 5, 23, 0, tzinfo=UTC)  # 18:00 in New York
    granted = [reserve(mailbox, evening + timedelta(seconds=i)) for i in range(5)]
    assert [g is not None for g in granted] == [True, True, True, False, False]
    # 04:59 UTC is still 23:59 on the 5th in New York: same local day, still capped.
    assert reserve(mailbox, datetime(2030, 3, 6, 4, 59, tzinfo=UTC)) is None
    # 05:00 UTC is local midnight: a new day, though no beat reset ran.
    slot = reserve(mailbox, datetime(2030, 3, 6, 5, 0, tzinfo=UTC))
    assert slot is not None and slot.sent_today == 1 and slot.day == date(2030, 3, 6)


@pytest.mark.django_db
def test_the_clients_limit_lowers_the_mailboxs_own():
    mailbox = MailboxFactory(client=ClientFactory(mailbox_daily_limit=2), daily_limit=2000)
    assert [reserve(mailbox, T0 + timedelta(seconds=i)) is not None for i in range(3)] == [True, True, False]


@pytest.mark.django_db
def test_the_beat_reset_starts_the_new_day_and_lifts_an_expired_daily_limit():
    client = ClientFactory(timezone="Asia/Tokyo")
    mailbox = MailboxFactory(client=client, sent_today=2000, sent_today_date=date(2030, 3, 5))
    limited = MailboxFactory(
        client=client,
        status=Mailbox.Status.LIMITED,
        sent_today=10,
        sent_today_date=date(2030, 3, 5),
        cooldown_until=datetime(2030, 3, 5, 15, 0, tzinfo=UTC),  # Tokyo midnight
    )
    before_midnight = datetime(2030, 3, 5, 14, 59, tzinfo=UTC)
    assert pacing.reset_daily_counts(now=before_midnight) == 0
    mailbox.refresh_from_db()
    assert mailbox.sent_today == 2000
    after_midnight = datetime(2030, 3, 5, 15, 0, tzinfo=UTC)
    assert pacing.reset_daily_counts(now=after_midnight) == 2
    mailbox.refresh_from_db()
    limited.refresh_from_db()
    assert (mailbox.sent_today, mailbox.sent_today_date) == (0, date(2030, 3, 6))
    assert (limited.status, limited.sent_today, limited.cooldown_until) == ("active", 0, None)


@pytest.mark.django_db
def test_a_limited_mailbox_sends_again_on_its_next_day_even_if_the_reset_never_ran():
    client = ClientFactory(timezone="Europe/Paris")
    mailbox = MailboxFactory(client=client)
    lifts = pacing.mark_daily_limit_reached(mailbox=mailbox, client=client, reason="dailyLimitExceeded", now=T0)
    assert lifts == datetime(2030, 3, 5, 23, 0, tzinfo=UTC)  # midnight in Paris (UTC+1 in March)
    assert reserve(mailbox, lifts - timedelta(seconds=1)) is None
    assert reserve(mailbox, lifts) is not None
    mailbox.refresh_from_db()
    assert mailbox.status == "active"


@pytest.mark.django_db
def test_a_cooling_down_paused_or_disconnected_mailbox_gets_no_slot():
    cooling = MailboxFactory(cooldown_until=T0 + timedelta(seconds=30))
    assert reserve(cooling, T0) is None
    assert reserve(cooling, T0 + timedelta(seconds=30)) is not None
    for status in (Mailbox.Status.PAUSED, Mailbox.Status.DISCONNECTED):
        assert reserve(MailboxFactory(status=status), T0) is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_the_pace_or_the_cap():
    mailbox = MailboxFactory(daily_limit=5, max_sends_per_second=2.5)
    granted: list[datetime] = []
    lock = threading.Lock()

    def worker(offset_ms: int) -> None:
        try:
            for step in range(40):
                at = T0 + timedelta(milliseconds=offset_ms + 100 * step)
                box = Mailbox.objects.select_related("client").get(pk=mailbox.pk)
                if pacing.reserve_send_slot(mailbox=box, client=box.client, now=at):
                    with lock:
                        granted.append(at)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted.sort()
    assert len(granted) == 5
    assert all(b - a >= timedelta(seconds=0.36) for a, b in itertools.pairwise(granted))


# ---------------------------------------------------------------- windows


def window(days=("mon", "tue", "wed", "thu", "fri"), start=9 * 60, end=17 * 60, zone="America/New_York"):
    client = ClientFactory.build(
        sending_days=list(days), window_start_minute=start, window_end_minute=end, timezone=zone
    )
    return SendWindow.for_client(client)


def test_inside_the_window_the_email_goes_now_and_outside_at_the_next_opening():
    w = window()
    tuesday_10am = datetime(2030, 3, 5, 15, 0, tzinfo=UTC)
    assert w.next_opening(tuesday_10am) == tuesday_10am
    tuesday_6pm = datetime(2030, 3, 5, 23, 0, tzinfo=UTC)
    assert w.next_opening(tuesday_6pm) == datetime(2030, 3, 6, 14, 0, tzinfo=UTC)
    friday_6pm = datetime(2030, 3, 8, 23, 0, tzinfo=UTC)
    assert w.next_opening(friday_6pm) == datetime(2030, 3, 11, 13, 0, tzinfo=UTC)  # Monday 9:00 EDT


def test_the_spring_forward_weekend_neither_skips_nor_doubles_a_day():
    # US DST starts Sunday 2030-03-10: Friday 9:00 is 14:00 UTC, Monday 9:00 is 13:00 UTC.
    w = window()
    friday_evening = datetime(2030, 3, 8, 22, 30, tzinfo=UTC)
    monday = w.next_opening(friday_evening)
    assert monday == datetime(2030, 3, 11, 13, 0, tzinfo=UTC)
    assert w.next_opening(monday + timedelta(hours=8)) == datetime(2030, 3, 12, 13, 0, tzinfo=UTC)


def test_every_day_across_a_dst_change_opens_exactly_once_at_local_nine():
    for zone, start in (
        ("Europe/Paris", datetime(2030, 3, 28, tzinfo=UTC)),
        ("America/New_York", datetime(2030, 10, 31, tzinfo=UTC)),
    ):
        w = window(days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"), zone=zone)
        at, openings = start, []
        while (opening := w.next_opening(at)) < start + timedelta(days=7):
            openings.append(opening)
            at = opening + timedelta(hours=9)  # past the close
        local = [o.astimezone(w.zone) for o in openings]
        assert [o.hour for o in local] == [9] * 7
        days = [o.date() for o in local]
        assert days == sorted(set(days)) and (days[-1] - days[0]).days == 6


def test_a_window_starting_inside_the_dst_gap_opens_just_after_it():
    w = window(days=("sun",), start=2 * 60 + 30, end=5 * 60)  # 02:30 does not exist on 2030-03-10
    opening = w.next_opening(datetime(2030, 3, 10, 5, 0, tzinfo=UTC))
    assert opening.astimezone(w.zone).hour == 3
    assert opening == datetime(2030, 3, 10, 7, 30, tzinfo=UTC)


def test_a_window_to_midnight_and_the_always_open_default():
    w = window(start=22 * 60, end=1440)
    late = datetime(2030, 3, 6, 4, 30, tzinfo=UTC)  # Tuesday 23:30 in New York
    assert w.next_opening(late) == late
    assert window(days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"), start=0, end=1440).always_open
    assert window(days=()).next_opening(late) is None
