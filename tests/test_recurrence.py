"""Recurrence rules on the wall clock, across DST changes in Europe and America."""

from __future__ import annotations

from datetime import datetime, time, timezone

import pytest

from bot.reminders.recurrence import Rule, RuleError, localize, zone


def firings(rule: Rule, tz: str, start: datetime, count: int) -> list[str]:
    out, moment = [], start
    for _ in range(count):
        moment = rule.next_after(moment, tz)
        out.append(moment.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M %Z"))
    return out


@pytest.mark.parametrize(
    ("tz", "start", "expected"),
    [
        # Europe springs forward on 2026-03-29 and falls back on 2026-10-25.
        ("Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=timezone.utc),
         ["2026-03-28 09:00 CET", "2026-03-29 09:00 CEST", "2026-03-30 09:00 CEST"]),
        ("Europe/Berlin", datetime(2026, 10, 23, 12, tzinfo=timezone.utc),
         ["2026-10-24 09:00 CEST", "2026-10-25 09:00 CET", "2026-10-26 09:00 CET"]),
        # America springs forward on 2026-03-08 and falls back on 2026-11-01.
        ("America/New_York", datetime(2026, 3, 6, 20, tzinfo=timezone.utc),
         ["2026-03-07 09:00 EST", "2026-03-08 09:00 EDT", "2026-03-09 09:00 EDT"]),
        ("America/Los_Angeles", datetime(2026, 10, 30, 20, tzinfo=timezone.utc),
         ["2026-10-31 09:00 PDT", "2026-11-01 09:00 PST", "2026-11-02 09:00 PST"]),
    ],
)
def test_a_daily_nine_oclock_stays_at_nine_across_dst(tz: str, start: datetime, expected: list[str]) -> None:
    assert firings(Rule("daily", at=time(9, 0)), tz, start, 3) == expected


def test_the_utc_instant_moves_by_the_offset_change() -> None:
    rule = Rule("daily", at=time(9, 0))
    first = rule.next_after(datetime(2026, 3, 28, 12, tzinfo=timezone.utc), "Europe/Berlin")
    second = rule.next_after(first, "Europe/Berlin")
    assert (first.hour, second.hour) == (7, 7) and (second - first).total_seconds() == 24 * 3600
    before = rule.next_after(datetime(2026, 3, 27, 12, tzinfo=timezone.utc), "Europe/Berlin")
    assert (first - before).total_seconds() == 23 * 3600


def test_a_time_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    rule = Rule("daily", at=time(2, 30))
    assert firings(rule, "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=timezone.utc), 2) == [
        "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST",
    ]
    assert firings(rule, "America/New_York", datetime(2026, 3, 7, 12, tzinfo=timezone.utc), 2) == [
        "2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT",
    ]


def test_a_time_that_happens_twice_fires_once() -> None:
    rule = Rule("daily", at=time(1, 30))
    assert firings(rule, "America/New_York", datetime(2026, 10, 31, 12, tzinfo=timezone.utc), 2) == [
        "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST",
    ]
    cron = Rule("cron", cron="30 2 * * *")
    assert firings(cron, "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=timezone.utc), 2) == [
        "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET",
    ]


def test_weekly_and_monthly_rules() -> None:
    weekly = Rule("weekly", at=time(10, 0), weekdays=(0, 3))
    assert firings(weekly, "Europe/Berlin", datetime(2026, 11, 21, tzinfo=timezone.utc), 3) == [
        "2026-11-23 10:00 CET", "2026-11-26 10:00 CET", "2026-11-30 10:00 CET",
    ]
    end_of_month = Rule("monthly", at=time(9, 0), day=31)
    assert firings(end_of_month, "Europe/Berlin", datetime(2027, 1, 1, tzinfo=timezone.utc), 3) == [
        "2027-01-31 09:00 CET", "2027-02-28 09:00 CET", "2027-03-31 09:00 CEST",
    ]


def test_cron_weekdays_follow_crontab_numbering() -> None:
    # crontab: 1-5 is Monday..Friday, 0 and 7 are Sunday (APScheduler 3 counts from Monday).
    weekdays = Rule("cron", cron="0 9 * * 1-5")
    assert [f[:10] for f in firings(weekdays, "UTC", datetime(2026, 11, 20, 12, tzinfo=timezone.utc), 3)] == [
        "2026-11-23", "2026-11-24", "2026-11-25",
    ]
    sunday = Rule("cron", cron="0 9 * * 7")
    assert firings(sunday, "UTC", datetime(2026, 11, 20, tzinfo=timezone.utc), 1) == ["2026-11-22 09:00 UTC"]


def test_rules_round_trip_and_bad_rules_are_refused() -> None:
    for rule in (
        Rule("daily", at=time(8, 30)),
        Rule("weekly", at=time(10, 0), weekdays=(0, 4)),
        Rule("monthly", at=time(9, 0), day=15),
        Rule("cron", cron="*/15 9-17 * * 1-5"),
    ):
        assert Rule.decode(rule.encode()) == rule
    for make in (
        lambda: Rule("cron", cron="0 9 * *"),
        lambda: Rule("cron", cron="0 9 * * 8"),
        lambda: Rule("weekly", at=time(9, 0)),
        lambda: Rule("monthly", at=time(9, 0), day=32),
        lambda: Rule.decode("hourly 5"),
    ):
        with pytest.raises(RuleError):
            make()


def test_localize_is_dst_safe() -> None:
    berlin = zone("Europe/Berlin")
    assert localize(datetime(2026, 3, 29, 2, 30), berlin) == datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)
    assert localize(datetime(2026, 10, 25, 2, 30), berlin) == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)
