"""current_time and convert_time: the time in the user's zone or any other,
DST-correct through pytz. Zones may be given as IANA names ("Asia/Tokyo"),
city names ("Tokyo", "new york") or a few common abbreviations."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from datetime import datetime, timezone as dt_timezone

import pytz

from bot.context import RequestContext
from bot.errors import ToolError

ABBREVIATIONS = {
    "utc": "UTC", "gmt": "UTC", "z": "UTC",
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles",
    "mst": "America/Denver", "mdt": "America/Denver",
    "cst": "America/Chicago", "cdt": "America/Chicago",
    "est": "America/New_York", "edt": "America/New_York",
    "bst": "Europe/London", "cet": "Europe/Paris", "cest": "Europe/Paris",
    "eet": "Europe/Athens", "msk": "Europe/Moscow", "ist": "Asia/Kolkata",
    "jst": "Asia/Tokyo", "aest": "Australia/Sydney",
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


# Lower-cased IANA names and their last component ("new york" -> America/New_York).
_BY_NAME: dict[str, str] = {}
for _zone in pytz.common_timezones:
    _BY_NAME.setdefault(_key(_zone.rsplit("/", 1)[-1]), _zone)
for _zone in pytz.all_timezones:
    _BY_NAME[_key(_zone)] = _zone


def resolve_zone(name: str) -> pytz.BaseTzInfo:
    """A time zone from an IANA name, a city or an abbreviation; ToolError with suggestions if unknown."""
    key = _key(name)
    zone = ABBREVIATIONS.get(key.replace(" ", "")) or _BY_NAME.get(key)
    if zone is None:
        suggestions = difflib.get_close_matches(key, list(_BY_NAME), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(_BY_NAME[s] for s in suggestions)}?" if suggestions else ""
        raise ToolError(f"unknown time zone {name!r}{hint} Use an IANA name like Europe/Berlin.")
    return pytz.timezone(zone)


def _describe(moment: datetime) -> str:
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M} ({moment:%A}) {moment.tzinfo.zone} (UTC{offset[:3]}:{offset[3:]})"  # type: ignore[union-attr]


def _parse_time(text: str, zone: pytz.BaseTzInfo, today: datetime) -> datetime:
    cleaned = text.strip().upper().replace(".", ":")
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %I:%M %p", "%H:%M", "%I:%M %p", "%I %p", "%H"):
        try:
            parsed = datetime.strptime(cleaned, pattern)
        except ValueError:
            continue
        if "%Y" not in pattern:
            parsed = parsed.replace(year=today.year, month=today.month, day=today.day)
        return zone.localize(parsed)  # DST-correct, unlike replace(tzinfo=...)
    raise ToolError(f"cannot read the time {text!r}; write HH:MM or YYYY-MM-DD HH:MM")


def current_time(ctx: RequestContext, timezone: str | None = None) -> str:
    """The current date and time, in the user's own time zone or in another one.

    Args:
        timezone: a time zone or city, e.g. "Asia/Tokyo" or "Tokyo"; omit for the user's zone
    """
    zone = resolve_zone(timezone) if timezone else pytz.timezone(ctx.timezone)
    now = datetime.now(dt_timezone.utc).astimezone(zone)
    mine = " (the user's time zone)" if not timezone or zone.zone == ctx.timezone else ""
    return _describe(now) + mine


def convert_time(ctx: RequestContext, time: str, to_timezone: str, from_timezone: str | None = None) -> str:
    """Convert a time from one time zone to another (for meetings, calls, flights).

    Args:
        time: "HH:MM" (today) or "YYYY-MM-DD HH:MM"
        to_timezone: the time zone or city to convert to
        from_timezone: the zone or city the time is in; omit for the user's zone
    """
    source = resolve_zone(from_timezone) if from_timezone else pytz.timezone(ctx.timezone)
    target = resolve_zone(to_timezone)
    today = datetime.now(dt_timezone.utc).astimezone(source)
    moment = _parse_time(time, source, today)
    return f"{_describe(moment)} = {_describe(moment.astimezone(target))}"


def register_tools(register: Callable[..., object]) -> None:
    register(current_time, hints={"en": "checking the time…", "ru": "смотрю время…"})
    register(convert_time, hints={"en": "converting the time…", "ru": "пересчитываю время…"})
