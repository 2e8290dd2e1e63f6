"""The /remind grammar and the tools' `when`: English and Russian phrases to
the right local time in several zones, and bad input refused with a reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.reminders.parsing import ReminderInputError, format_local, parse_reminder, parse_when
from bot.reminders.recurrence import zone

# Saturday 2026-11-21, 09:00 UTC.
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)


def local(when: datetime, tz: str) -> str:
    return format_local(when, tz)


@pytest.mark.parametrize(
    ("tz", "request_text", "text", "fires", "rule"),
    [
        # The phrases, in three zones.
        ("Europe/Berlin", "call mom tomorrow at 9", "call mom", "2026-11-22 09:00", None),
        ("America/New_York", "call mom tomorrow at 9", "call mom", "2026-11-22 09:00", None),
        ("Asia/Tokyo", "call mom tomorrow at 9", "call mom", "2026-11-22 09:00", None),
        ("Europe/Berlin", "in 10 minutes check the oven", "check the oven", "2026-11-21 10:10", None),
        ("America/New_York", "in 10 minutes check the oven", "check the oven", "2026-11-21 04:10", None),
        ("Europe/Moscow", "через 2 часа позвонить маме", "позвонить маме", "2026-11-21 14:00", None),
        ("Asia/Tokyo", "через 2 часа позвонить маме", "позвонить маме", "2026-11-21 20:00", None),
        ("Europe/Berlin", "every day at 8:30 take pills", "take pills", "2026-11-22 08:30", "daily 08:30"),
        ("America/New_York", "every day at 8:30 take pills", "take pills", "2026-11-21 08:30", "daily 08:30"),  # 04:00 there
        ("Europe/Berlin", "every monday 10:00 standup", "standup", "2026-11-23 10:00", "weekly mon 10:00"),
        ("Asia/Tokyo", "every monday 10:00 standup", "standup", "2026-11-23 10:00", "weekly mon 10:00"),
        # More English.
        ("Europe/Berlin", "tomorrow at 9 call mom", "call mom", "2026-11-22 09:00", None),
        ("Europe/Berlin", "remind me to buy milk at 6pm", "buy milk", "2026-11-21 18:00", None),
        ("Europe/Berlin", "buy sun cream tomorrow", "buy sun cream", "2026-11-22 09:00", None),
        ("Europe/Berlin", "at 8 walk the dog", "walk the dog", "2026-11-22 08:00", None),  # 08:00 passed: tomorrow
        ("Europe/Berlin", "in an hour and a half call back", "call back", "2026-11-21 11:30", None),
        ("Europe/Berlin", "tonight at 9 movie", "movie", "2026-11-21 21:00", None),
        ("Europe/Berlin", "on friday at 18:00 drinks", "drinks", "2026-11-27 18:00", None),
        ("Europe/Berlin", "dec 25th 2026 at 10am presents", "presents", "2026-12-25 10:00", None),
        ("Europe/Berlin", "2026-12-25 10:00 xmas", "xmas", "2026-12-25 10:00", None),
        ("Europe/Berlin", "jan 5 dentist", "dentist", "2027-01-05 09:00", None),
        ("Europe/Berlin", "on weekdays at 7:45 wake up", "wake up", "2026-11-23 07:45", "weekly mon,tue,wed,thu,fri 07:45"),
        ("Europe/Berlin", "every wed and fri at 7pm gym", "gym", "2026-11-25 19:00", "weekly wed,fri 19:00"),
        ("Europe/Berlin", "every month on the 15th at 9:00 pay rent", "pay rent", "2026-12-15 09:00", "monthly 15 09:00"),
        ("Europe/Berlin", "cron 0 9 * * 1-5 standup", "standup", "2026-11-23 09:00", "cron 0 9 * * 1-5"),
        # More Russian.
        ("Europe/Moscow", "завтра в 9 позвонить маме", "позвонить маме", "2026-11-22 09:00", None),
        ("Europe/Moscow", "через полчаса выключить плиту", "выключить плиту", "2026-11-21 12:30", None),
        ("Europe/Moscow", "в 7 вечера ужин", "ужин", "2026-11-21 19:00", None),
        ("Europe/Moscow", "завтра утром пробежка", "пробежка", "2026-11-22 09:00", None),
        ("Europe/Moscow", "в пятницу в 18:00 созвон", "созвон", "2026-11-27 18:00", None),
        ("Europe/Moscow", "25 декабря в 10 подарки", "подарки", "2026-12-25 10:00", None),
        ("Europe/Moscow", "15.12 в 14:30 врач", "врач", "2026-12-15 14:30", None),
        ("Europe/Moscow", "каждый день в 8:30 пить таблетки", "пить таблетки", "2026-11-22 08:30", "daily 08:30"),
        ("Europe/Moscow", "каждый понедельник в 10:00 планёрка", "планёрка", "2026-11-23 10:00", "weekly mon 10:00"),
        ("Europe/Moscow", "по понедельникам и четвергам в 19:00 спортзал", "спортзал", "2026-11-23 19:00", "weekly mon,thu 19:00"),
        ("Europe/Moscow", "каждый месяц 15 числа оплатить аренду", "оплатить аренду", "2026-12-15 09:00", "monthly 15 09:00"),
        ("Europe/Moscow", "напомни мне через 5 мин чай", "чай", "2026-11-21 12:05", None),
    ],
)
def test_phrases_fire_at_the_right_local_time(tz: str, request_text: str, text: str, fires: str, rule: str | None) -> None:
    parsed = parse_reminder(request_text, tz, NOW)
    assert parsed.text == text
    assert local(parsed.schedule.first, tz) == fires
    assert (parsed.schedule.rule.encode() if parsed.schedule.rule else None) == rule


def test_the_same_words_mean_different_instants_in_different_zones() -> None:
    berlin = parse_reminder("tomorrow at 9 x", "Europe/Berlin", NOW).schedule.first
    new_york = parse_reminder("tomorrow at 9 x", "America/New_York", NOW).schedule.first
    assert new_york - berlin == timedelta(hours=6)


def test_hours_count_real_time_and_days_keep_the_wall_clock_across_dst() -> None:
    # Berlin springs forward at 02:00 on 2026-03-29; it is 00:30 local then.
    before_jump = datetime(2026, 3, 28, 23, 30, tzinfo=timezone.utc)
    in_hours = parse_reminder("in 2 hours x", "Europe/Berlin", before_jump).schedule.first
    assert in_hours - before_jump == timedelta(hours=2)
    assert local(in_hours, "Europe/Berlin") == "2026-03-29 03:30"
    saturday_noon = datetime(2026, 3, 28, 11, 0, tzinfo=timezone.utc)  # 12:00 CET
    in_days = parse_reminder("in 2 days x", "Europe/Berlin", saturday_noon).schedule.first
    assert local(in_days, "Europe/Berlin") == "2026-03-30 12:00"
    assert in_days - saturday_noon == timedelta(hours=47)


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("in 10 minutes", "empty_text"),
        ("call mom", "no_time"),
        ("asdf qwerty", "no_time"),
        ("today at 8 call mom", "past"),
        ("2020-01-01 10:00 old", "past"),
        ("in 20 years retire", "too_far"),
        ("tomorrow at 9 " + "x" * 1200, "too_long"),
        ("every 2 hours drink water", "every_hour"),
        ("cron 0 9 * * 9 standup", "bad_cron"),
        ("cron 99 9 * * * standup", "bad_cron"),
        ("at 25:00 something", "no_time"),
        # Past the calendar, or a rule that never fires: refused, not a crash.
        ("in 99999999999999999999 minutes x", "out_of_range"),
        ("in 100000 years far", "out_of_range"),
        ("cron 0 0 31 2 * never", "bad_cron"),
        ("cron 0 0 30 2 * never", "bad_cron"),
        # An impossible date or time beside a possible one: not "tomorrow at 10".
        ("2027-13-01 10:00 x", "bad_date"),
        ("2027-02-30 10:00 x", "bad_date"),
        ("tomorrow at 25:00 x", "bad_date"),
        ("tomorrow at 23:60 x", "bad_date"),
        ("tomorrow at 9:75 x", "bad_date"),
        ("friday at 25:00 x", "bad_date"),
        ("every day at 25:00 x", "bad_date"),
        ("on 31.04 at 10 x", "bad_date"),
        ("on February 30 at 9 x", "bad_date"),
        ("30 февраля в 9 x", "bad_date"),
        # Now is not a time to remind at, and not "no time given" (tomorrow morning).
        ("in 0 minutes zero", "past"),
        ("через 0 минут ноль", "past"),
        ("in -5 minutes neg", "bad_date"),
        ("через −5 минут минус", "bad_date"),
    ],
)
def test_bad_requests_are_refused_not_guessed(request_text: str, code: str) -> None:
    with pytest.raises(ReminderInputError) as caught:
        parse_reminder(request_text, "Europe/Berlin", NOW)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("request_text", "text", "fires"),
    [
        ("in 5 minutes: the 14:00 call", "the 14:00 call", "2026-11-21 10:05"),
        ("tomorrow at 9 buy 2.5 kg of apples", "buy 2.5 kg of apples", "2026-11-22 09:00"),
        ("tomorrow at 9 read chapter march 45", "read chapter march 45", "2026-11-22 09:00"),
        ("on february 29 at 9 leap", "leap", "2028-02-29 09:00"),
        ("tomorrow at 9 list -2 ways in -2 ways", "list -2 ways in -2 ways", "2026-11-22 09:00"),
    ],
)
def test_possible_dates_and_numbers_left_in_the_text_stay_there(request_text: str, text: str, fires: str) -> None:
    parsed = parse_reminder(request_text, "Europe/Berlin", NOW)
    assert (parsed.text, local(parsed.schedule.first, "Europe/Berlin")) == (text, fires)


def test_the_tools_when_past_the_calendar_is_refused() -> None:
    with pytest.raises(ReminderInputError) as caught:
        parse_when("in 99999999999999999999 minutes", "Europe/Berlin", NOW)
    assert caught.value.code == "out_of_range"


def test_a_past_time_names_the_time_it_understood() -> None:
    with pytest.raises(ReminderInputError) as caught:
        parse_reminder("today at 8 call mom", "Europe/Berlin", NOW)
    assert caught.value.values == {"when": "2026-11-21 08:00", "zone": "Europe/Berlin"}


def test_when_accepts_iso_8601_with_and_without_offset() -> None:
    naive = parse_when("2026-12-25T10:00", "Europe/Berlin", NOW)
    assert local(naive.first, "Europe/Berlin") == "2026-12-25 10:00"
    offset = parse_when("2026-12-25T10:00:00+03:00", "Europe/Berlin", NOW)
    assert offset.first == datetime(2026, 12, 25, 7, 0, tzinfo=timezone.utc)
    zulu = parse_when("2026-12-25T10:00:00Z", "Asia/Tokyo", NOW)
    assert zulu.first == datetime(2026, 12, 25, 10, 0, tzinfo=timezone.utc)
    date_only = parse_when("2026-12-25", "Europe/Berlin", NOW)
    assert local(date_only.first, "Europe/Berlin") == "2026-12-25 09:00"


def test_when_uses_the_same_grammar_as_remind() -> None:
    for phrase in ("tomorrow at 9", "через 2 часа", "every day at 8:30", "friday 18:00"):
        request = f"{phrase} something"
        assert parse_when(phrase, "Europe/Berlin", NOW) == parse_reminder(request, "Europe/Berlin", NOW).schedule


def test_when_must_be_only_a_time() -> None:
    with pytest.raises(ReminderInputError) as caught:
        parse_when("tomorrow at 9 call mom", "Europe/Berlin", NOW)
    assert caught.value.code == "unparsed"
    for bad in ("", "someday", "2026-13-45"):
        with pytest.raises(ReminderInputError):
            parse_when(bad, "Europe/Berlin", NOW)


@pytest.mark.parametrize(
    ("when", "recurrence", "fires", "rule"),
    [
        ("tomorrow 8:30", "daily", "2026-11-22 08:30", "daily 08:30"),
        ("2026-12-01 09:00", "monthly", "2026-12-01 09:00", "monthly 1 09:00"),
        ("monday 10:00", "weekly", "2026-11-23 10:00", "weekly mon 10:00"),
        ("tomorrow 9:00", "weekdays", "2026-11-23 09:00", "weekly mon,tue,wed,thu,fri 09:00"),
        ("at 19:00", "every monday and thursday", "2026-11-23 19:00", "weekly mon,thu 19:00"),
        ("tomorrow", "0 9 * * 1-5", "2026-11-23 09:00", "cron 0 9 * * 1-5"),
    ],
)
def test_when_with_recurrence(when: str, recurrence: str, fires: str, rule: str) -> None:
    schedule = parse_when(when, "Europe/Berlin", NOW, recurrence)
    assert local(schedule.first, "Europe/Berlin") == fires
    assert schedule.rule is not None and schedule.rule.encode() == rule


def test_unknown_recurrence_is_refused() -> None:
    with pytest.raises(ReminderInputError) as caught:
        parse_when("tomorrow at 9", "Europe/Berlin", NOW, "fortnightly-ish")
    assert caught.value.code == "bad_recurrence"


def test_huge_and_odd_unicode_input_is_handled_quickly() -> None:
    # Neither a crash nor a stall: the grammar is linear-ish in the input.
    with pytest.raises(ReminderInputError):
        parse_reminder("🙂" * 5000, "Europe/Berlin", NOW)
    parsed = parse_reminder("завтра в 9 🎂 торт для Ёжика", "Europe/Berlin", NOW)
    assert parsed.text == "🎂 торт для Ёжика"
    assert zone("Europe/Berlin")
