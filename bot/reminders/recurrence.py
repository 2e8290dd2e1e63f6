"""Recurrence rules and wall-clock arithmetic in a user's zone.

A rule is evaluated in local time: "every day at 09:00" means 09:00 on the
user's wall clock, whatever the UTC offset is that day. Local times that do
not exist (the spring-forward gap) move forward by the gap, as the clock on
the wall does; local times that happen twice (fall back) fire once, at the
first of the two."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

import pytz
from apscheduler.triggers.cron import CronTrigger

RuleKind = Literal["daily", "weekly", "monthly", "cron"]
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Crontab numbers days from Sunday (0 and 7); Python and APScheduler 3.x from Monday.
_CRON_DOW = {0: "sun", 1: "mon", 2: "tue", 3: "wed", 4: "thu", 5: "fri", 6: "sat", 7: "sun"}
# Enough to find the next occurrence of any rule (a monthly rule on the 31st
# waits at most two months); a guard against an endless loop, not a limit.
_SEARCH_DAYS = 400


class RuleError(ValueError):
    """A recurrence that cannot be understood; the message says why."""


def zone(name: str) -> pytz.BaseTzInfo:
    return pytz.timezone(name)


def localize(naive: datetime, tz: pytz.BaseTzInfo) -> datetime:
    """A local wall-clock time as an aware UTC datetime, DST-safe."""
    try:
        local = tz.localize(naive, is_dst=None)
    except pytz.NonExistentTimeError:
        # In the gap: read the time with the pre-jump offset, then normalize,
        # which lands as far past the jump as the time was into the gap.
        local = tz.normalize(tz.localize(naive, is_dst=False))
    except pytz.AmbiguousTimeError:
        local = tz.localize(naive, is_dst=True)  # the first of the two
    return local.astimezone(timezone.utc)


def add_months(day: date, months: int) -> date:
    """Same day of month ``months`` later, clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Rule:
    kind: RuleKind
    at: time | None = None  # local time of day (daily, weekly, monthly)
    weekdays: tuple[int, ...] = field(default=())  # 0 = Monday (weekly)
    day: int | None = None  # day of month 1..31, clamped to short months (monthly)
    cron: str | None = None  # standard crontab: minute hour day month weekday (0 = Sunday)

    def __post_init__(self) -> None:
        if self.kind in ("daily", "weekly", "monthly") and self.at is None:
            raise RuleError(f"a {self.kind} rule needs a time of day")
        if self.kind == "weekly" and not self.weekdays:
            raise RuleError("a weekly rule needs at least one weekday")
        if self.kind == "monthly" and not (self.day and 1 <= self.day <= 31):
            raise RuleError("a monthly rule needs a day of month from 1 to 31")
        if self.kind == "cron":
            cron_trigger(self.cron or "", "UTC")  # validates

    # Encoding: compact, stable text stored in the reminders table.

    def encode(self) -> str:
        hhmm = self.at.strftime("%H:%M") if self.at else ""
        if self.kind == "daily":
            return f"daily {hhmm}"
        if self.kind == "weekly":
            return f"weekly {','.join(WEEKDAY_NAMES[d] for d in self.weekdays)} {hhmm}"
        if self.kind == "monthly":
            return f"monthly {self.day} {hhmm}"
        return f"cron {self.cron}"

    @classmethod
    def decode(cls, text: str) -> Rule:
        kind, _, rest = text.partition(" ")
        parts = rest.split()
        try:
            if kind == "daily":
                return cls("daily", at=_hhmm(parts[0]))
            if kind == "weekly":
                days = tuple(WEEKDAY_NAMES.index(d) for d in parts[0].split(","))
                return cls("weekly", at=_hhmm(parts[1]), weekdays=days)
            if kind == "monthly":
                return cls("monthly", at=_hhmm(parts[1]), day=int(parts[0]))
            if kind == "cron":
                return cls("cron", cron=rest.strip())
        except (IndexError, ValueError) as exc:
            raise RuleError(f"stored rule {text!r} is malformed") from exc
        raise RuleError(f"unknown rule kind in {text!r}")

    # Evaluation.

    def next_after(self, after: datetime, tz_name: str) -> datetime:
        """The first firing strictly after ``after`` (aware), as aware UTC."""
        tz = zone(tz_name)
        if self.kind == "cron":
            return _next_cron(self.cron or "", tz_name, after)
        assert self.at is not None
        start = after.astimezone(tz).date()
        for offset in range(_SEARCH_DAYS):
            day = start + timedelta(days=offset)
            if self.matches(day):
                fire = localize(datetime.combine(day, self.at), tz)
                if fire > after:
                    return fire
        raise RuleError(f"rule {self.encode()!r} never fires")

    def matches(self, day: date) -> bool:
        if self.kind == "daily":
            return True
        if self.kind == "weekly":
            return day.weekday() in self.weekdays
        if self.kind == "monthly":
            assert self.day is not None
            return day.day == min(self.day, calendar.monthrange(day.year, day.month)[1])
        raise AssertionError(self.kind)


def _next_cron(expression: str, tz_name: str, after: datetime) -> datetime:
    tz = zone(tz_name)
    trigger = cron_trigger(expression, tz_name)
    wall_after = after.astimezone(tz).replace(tzinfo=None)
    moment = after
    for _ in range(3):
        fire = trigger.get_next_fire_time(None, moment.astimezone(tz) + timedelta(seconds=1))
        if fire is None:
            raise RuleError(f"cron expression {expression!r} never fires")
        # APScheduler fires a wall time that falls back twice at both
        # instants; a reminder should fire once, like the other rules.
        if fire.replace(tzinfo=None) != wall_after:
            return fire.astimezone(timezone.utc)
        moment = fire
    raise RuleError(f"cron expression {expression!r} never fires")


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


_CRON_FIELD = re.compile(r"^[\d*,/\-a-zA-Z]+$")


def cron_trigger(expression: str, tz_name: str) -> CronTrigger:
    """APScheduler's CronTrigger for a standard crontab line (0 = Sunday)."""
    fields = expression.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise RuleError(
            f"a cron expression has five fields: minute hour day month weekday, e.g. '0 9 * * 1-5' (got {expression!r})"
        )
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month,
            day_of_week=_crontab_weekdays(weekday), timezone=zone(tz_name),
        )
    except ValueError as exc:
        raise RuleError(f"invalid cron expression {expression!r}: {exc}") from None


def _crontab_weekdays(field_text: str) -> str:
    """Translate crontab weekday numbers to names, which APScheduler 3.x reads
    the same way crontab does (its own numbers start at Monday)."""
    if not any(ch.isdigit() for ch in field_text):
        return field_text
    days: set[int] = set()
    for item in field_text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            low_text, high_text = span.split("-", 1)
            low, high = int(low_text), int(high_text)
        else:
            low = high = int(span)
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step >= 1):
            raise RuleError(f"weekday field {field_text!r} must use 0-7 (0 and 7 are Sunday)")
        days.update(n % 7 for n in range(low, high + 1, step))
    return ",".join(_CRON_DOW[d] for d in sorted(days))
