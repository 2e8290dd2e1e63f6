"""Reminder phrases in English and Russian, parsed without a model.

A small grammar instead of a general date parser: general parsers guess
("at 9" became September 2027 in our trials, "tomorrow at 9" kept the current
hour), and a reminder must never fire at a guessed time. The grammar knows:

    relative     in 10 minutes, in an hour and a half?, через 2 часа, через полчаса
    day          today, tomorrow, the day after tomorrow, сегодня, завтра, послезавтра
    weekday      on friday, next monday, в пятницу, во вторник
    date         25 december, dec 25th 2026, 2026-12-25, 25.12, 25 декабря
    time         at 9, 9:30, 9pm, noon, в 9, в 21:00, в 7 вечера
    part of day  morning/afternoon/evening/tonight, утром/днём/вечером/ночью
    recurrence   every day, daily, every monday and thursday, on weekdays,
                 every month on the 15th, каждый день, по понедельникам,
                 каждый месяц 15 числа, and `cron <5 fields>` at the start

For /remind the longest run of such words anywhere in the text is the time
and the rest is what to remind of. A day without a time means 09:00 local,
which the confirmation states. Durations in minutes and hours are counted in
real time; days, weeks and months on the user's wall clock (so "in 2 days"
keeps the hour across a DST change)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timedelta, timezone

from bot.errors import AriumError
from bot.reminders.recurrence import Rule, RuleError, add_months, localize, zone

MAX_TEXT_CHARS = 1000
MAX_AHEAD = timedelta(days=366 * 10)
DEFAULT_TIME = time(9, 0)
PART_OF_DAY_TIMES = {"morning": time(9, 0), "afternoon": time(13, 0), "evening": time(18, 0), "night": time(21, 0)}


class ReminderInputError(AriumError, ValueError):
    """Input we will not guess about. ``code`` picks the user-facing message
    (``rem_err_<code>`` in bot/reminders/strings.py), ``values`` fill it in."""

    def __init__(self, code: str, **values: object) -> None:
        super().__init__(f"{code}: {values}" if values else code)
        self.code = code
        self.values = values


@dataclass(frozen=True)
class Schedule:
    first: datetime  # aware UTC
    rule: Rule | None = None


@dataclass(frozen=True)
class ParsedReminder:
    text: str
    schedule: Schedule


# --------------------------------------------------------------------------- vocabulary

def _forms(table: dict[str, tuple[str, ...]]) -> dict[str, int]:
    return {form: index for index, (_, forms) in enumerate(table.items()) for form in forms}


# Full names stand alone; abbreviations only after "on"/"every"/"в"/... (so "sun cream" stays text).
_WEEKDAY_FULL = _forms({
    "mon": ("monday", "понедельник", "понедельника"),
    "tue": ("tuesday", "вторник", "вторника"),
    "wed": ("wednesday", "среда", "среду", "среды"),
    "thu": ("thursday", "четверг", "четверга"),
    "fri": ("friday", "пятница", "пятницу", "пятницы"),
    "sat": ("saturday", "суббота", "субботу", "субботы"),
    "sun": ("sunday", "воскресенье", "воскресенья"),
})
_WEEKDAY_SHORT = _forms({
    "mon": ("mon", "пн"), "tue": ("tue", "tues", "вт"), "wed": ("wed", "ср"),
    "thu": ("thu", "thur", "thurs", "чт"), "fri": ("fri", "пт"), "sat": ("sat", "сб"), "sun": ("sun", "вс"),
})
_WEEKDAY_PLURAL = _forms({
    "mon": ("mondays", "понедельникам"), "tue": ("tuesdays", "вторникам"), "wed": ("wednesdays", "средам"),
    "thu": ("thursdays", "четвергам"), "fri": ("fridays", "пятницам"), "sat": ("saturdays", "субботам"),
    "sun": ("sundays", "воскресеньям"),
})
_MONTHS = {form: index + 1 for index, forms in enumerate((
    ("january", "jan", "январь", "января", "янв"),
    ("february", "feb", "февраль", "февраля", "фев"),
    ("march", "mar", "март", "марта"),
    ("april", "apr", "апрель", "апреля", "апр"),
    ("may", "май", "мая"),
    ("june", "jun", "июнь", "июня", "июн"),
    ("july", "jul", "июль", "июля", "июл"),
    ("august", "aug", "август", "августа", "авг"),
    ("september", "sep", "sept", "сентябрь", "сентября", "сен", "сент"),
    ("october", "oct", "октябрь", "октября", "окт"),
    ("november", "nov", "ноябрь", "ноября", "ноя"),
    ("december", "dec", "декабрь", "декабря", "дек"),
)) for form in forms}
_NUMBER_WORDS: dict[str, float] = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "half": 0.5, "couple": 2,
    "один": 1, "одну": 1, "одна": 1, "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5,
    "шесть": 6, "семь": 7, "восемь": 8, "девять": 9, "десять": 10, "пятнадцать": 15,
    "двадцать": 20, "тридцать": 30, "сорок": 40, "пятьдесят": 50, "полтора": 1.5, "полторы": 1.5,
    "пару": 2,
}
_UNITS: dict[str, str] = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes", "мин", "минута", "минуту", "минуты", "минут", "м"), "minutes"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours", "ч", "час", "часа", "часов"), "hours"),
    **dict.fromkeys(("d", "day", "days", "день", "дня", "дней", "сутки", "суток", "д"), "days"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks", "неделя", "неделю", "недели", "недель", "нед"), "weeks"),
    **dict.fromkeys(("month", "months", "месяц", "месяца", "месяцев", "мес"), "months"),
    **dict.fromkeys(("year", "years", "год", "года", "лет"), "years"),
}
_DAY_WORDS = {"today": 0, "сегодня": 0, "tomorrow": 1, "завтра": 1, "послезавтра": 2}
_PARTS = {
    "morning": "morning", "утром": "morning", "утра": "morning",
    "afternoon": "afternoon", "днём": "afternoon", "днем": "afternoon",
    "evening": "evening", "вечером": "evening", "tonight": "night", "night": "night", "ночью": "night",
}
_TIME_PREFIXES = {"at", "by", "в", "во", "к", "ко"}
_WEEKDAY_PREFIXES = {"on", "this", "next", "coming", "в", "во", "этот", "эту", "это", "следующий", "следующую", "следующее", "ближайший", "ближайшую", "ближайшее"}
_EVERY = {"every", "each", "каждый", "каждую", "каждое", "каждые"}
_FILLERS = {",", "and", "и", "&", "the", "of"}
_ORDINAL_SUFFIXES = {"st", "nd", "rd", "th", "го", "е", "ое", "ого"}


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"(?P<iso>\d{4}-\d{1,2}-\d{1,2})"
    r"|(?P<clock>\d{1,2}:\d{2})"
    r"|(?P<dotted>\d{1,2}[.,]\d{1,2}(?:\.\d{2,4})?)"
    r"|(?P<num>\d+)"
    r"|(?P<ampm>[ap]\.m\.?)"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)?)"
    r"|(?P<comma>[,&])"
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # lower case, ё folded to е
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "word"
        value = match.group().lower().replace("ё", "е").replace("’", "'")
        if kind == "ampm":
            value = value.replace(".", "")
        tokens.append(Token(kind, value, match.start(), match.end()))
    return tokens


# --------------------------------------------------------------------------- fragments

@dataclass
class Found:
    """What a run of words says; a field set twice means two answers to one question."""

    elapsed: timedelta | None = None  # real time (minutes, hours)
    wall_days: int | None = None  # calendar days and weeks
    wall_months: int | None = None
    day_offset: int | None = None
    weekday: int | None = None
    date: tuple[int | None, int, int] | None = None  # (year or None, month, day)
    month_day: int | None = None
    at: time | None = None
    part: str | None = None
    every: str | None = None  # daily | weekly | monthly
    every_weekdays: tuple[int, ...] | None = None

    def merge(self, other: Found) -> Found | None:
        """Both together, or None when they contradict each other."""
        merged = replace(self)
        for f in fields(self):
            theirs = getattr(other, f.name)
            if theirs is None:
                continue
            if getattr(self, f.name) is not None:
                return None
            setattr(merged, f.name, theirs)
        return merged if merged.consistent() else None

    def consistent(self) -> bool:
        relative = self.elapsed is not None or self.wall_days is not None or self.wall_months is not None
        anchors = sum(x is not None for x in (self.day_offset, self.weekday, self.date, self.month_day))
        if relative and (anchors or self.every):
            return False
        if self.elapsed is not None and (self.at is not None or self.part is not None):
            return False
        if self.every and (self.day_offset is not None or self.date is not None):
            return False
        if self.every == "daily" and (self.weekday is not None or self.month_day is not None):
            return False
        if self.every == "weekly" and self.month_day is not None:
            return False
        if self.every == "monthly" and self.weekday is not None:
            return False
        return anchors <= 1

    @property
    def has_day(self) -> bool:
        return any(x is not None for x in (self.day_offset, self.weekday, self.date, self.month_day, self.every, self.part))


Match = tuple[int, Found]  # (index after the match, what it says)


def _word(tokens: list[Token], i: int) -> str:
    return tokens[i].text if i < len(tokens) else ""


def _int(token: Token) -> int | None:
    return int(token.text) if token.kind == "num" else None


def _match_relative(tokens: list[Token], i: int) -> Match | None:
    """in 10 minutes / in an hour and 30 minutes / через 2 часа / через полчаса / через час."""
    if _word(tokens, i) not in ("in", "через"):
        return None
    j, elapsed, days, months, found_any = i + 1, timedelta(0), 0, 0, False
    while j < len(tokens):
        if _word(tokens, j) == "полчаса":
            elapsed, j, found_any = elapsed + timedelta(minutes=30), j + 1, True
        else:
            quantity, k = _quantity(tokens, j)
            if quantity is None and tokens[i].text == "через" and _word(tokens, j) in _UNITS:
                quantity = 1  # "через час", "через неделю"
            unit = _UNITS.get(_word(tokens, k))
            if quantity is None or unit is None:
                break
            j, found_any = k + 1, True
            if unit == "minutes":
                elapsed += timedelta(minutes=quantity)
            elif unit == "hours":
                elapsed += timedelta(hours=quantity)
            elif unit in ("days", "weeks"):
                count = quantity * (7 if unit == "weeks" else 1)
                if count != int(count):
                    elapsed += timedelta(days=count)
                else:
                    days += int(count)
            else:
                count = quantity * (12 if unit == "years" else 1)
                if count != int(count):
                    return None
                months += int(count)
        if _word(tokens, j) in ("and", "и", ",") and j + 1 < len(tokens):
            lookahead_quantity, k = _quantity(tokens, j + 1)
            if (lookahead_quantity is not None and _word(tokens, k) in _UNITS) or _word(tokens, j + 1) == "полчаса":
                j += 1
                continue
            if _word(tokens, j + 1) == "a" and _word(tokens, j + 2) == "half":
                elapsed += _half_of_last(elapsed, days, months)
                j += 3
                break
        if _word(tokens, j) == "and" and _word(tokens, j + 1) == "a" and _word(tokens, j + 2) == "half":
            elapsed += _half_of_last(elapsed, days, months)
            j += 3
        break
    if not found_any:
        return None
    found = Found(
        # "in 0 minutes" is now, not "no time given" (which would be tomorrow morning).
        elapsed=elapsed if elapsed or not (days or months) else None,
        wall_days=days or None,
        wall_months=months or None,
    )
    return j, found


def _half_of_last(elapsed: timedelta, days: int, months: int) -> timedelta:
    # "in an hour and a half": half of the unit just named (hours here, the common case).
    return timedelta(minutes=30) if elapsed else timedelta(hours=12) if days else timedelta(days=15)


def _quantity(tokens: list[Token], i: int) -> tuple[float | None, int]:
    if i >= len(tokens):
        return None, i
    token = tokens[i]
    if token.kind == "num":
        return float(token.text), i + 1
    if token.kind == "dotted" and token.text.count(".") + token.text.count(",") == 1:
        return float(token.text.replace(",", ".")), i + 1
    if token.text in _NUMBER_WORDS:
        value = _NUMBER_WORDS[token.text]
        k = i + 1
        if token.text == "half" and _word(tokens, k) in ("a", "an"):
            k += 1
        if token.text == "couple" and _word(tokens, k) == "of":
            k += 1
        return value, k
    return None, i


def _match_time(tokens: list[Token], i: int, after_day: bool) -> Match | None:
    """at 9 / 9:30 / 9pm / noon / в 9 / в 21:00 / в 7 вечера / к 8."""
    j = i
    prefixed = _word(tokens, j) in _TIME_PREFIXES
    if prefixed:
        j += 1
    if j >= len(tokens):
        return None
    token = tokens[j]
    if token.text in ("noon", "midday", "полдень"):
        return j + 1, Found(at=time(12, 0))
    if token.text in ("midnight", "полночь"):
        return j + 1, Found(at=time(0, 0))
    hour: int | None = None
    minute = 0
    if token.kind == "clock" or (token.kind == "dotted" and prefixed and "," not in token.text):
        hour_text, minute_text = re.split(r"[:.]", token.text)[:2]
        hour, minute = int(hour_text), int(minute_text)
    elif token.kind == "num" and len(token.text) <= 2:
        hour = int(token.text)
    if hour is None:
        return None
    j += 1
    explicit_clock = token.kind != "num"
    if _word(tokens, j) in ("o'clock", "oclock") or (prefixed and _word(tokens, j) in ("часов", "часа", "час")):
        j, explicit_clock = j + 1, True
    suffix = _word(tokens, j)
    if suffix in ("am", "pm", "утра", "дня", "вечера", "ночи"):
        adjusted = _twelve_hour(hour, suffix)
        if adjusted is None:
            return None
        hour, j, explicit_clock = adjusted, j + 1, True
    # A bare number is a time only when something says so: "at 9", "9 pm", "tomorrow 9".
    if token.kind == "num" and not (prefixed or explicit_clock or after_day):
        return None
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return j, Found(at=time(hour, minute))


def _twelve_hour(hour: int, suffix: str) -> int | None:
    if not 1 <= hour <= 12:
        return None
    if suffix in ("am", "утра"):
        return 0 if hour == 12 else hour
    if suffix in ("pm", "вечера"):
        return hour if hour == 12 else hour + 12
    if suffix == "дня":  # "в 3 дня" is 15:00, "в 12 дня" noon
        return hour if hour == 12 or hour >= 11 else hour + 12
    return 0 if hour == 12 else hour + 12 if hour >= 9 else hour  # ночи: "в 11 ночи", "в 2 ночи"


def _match_day(tokens: list[Token], i: int) -> Match | None:
    word = _word(tokens, i)
    if word in _DAY_WORDS:
        return i + 1, Found(day_offset=_DAY_WORDS[word])
    if word == "tonight":
        return i + 1, Found(day_offset=0, part="night")
    if (word, _word(tokens, i + 1), _word(tokens, i + 2)) == ("the", "day", "after") and _word(tokens, i + 3) == "tomorrow":
        return i + 4, Found(day_offset=2)
    if (word, _word(tokens, i + 1), _word(tokens, i + 2)) == ("day", "after", "tomorrow"):
        return i + 3, Found(day_offset=2)
    if word == "this" and _word(tokens, i + 1) in ("morning", "afternoon", "evening"):
        return i + 2, Found(day_offset=0, part=_PARTS[_word(tokens, i + 1)])
    return None


def _match_part(tokens: list[Token], i: int) -> Match | None:
    word = _word(tokens, i)
    if word in ("in", "at") and _word(tokens, i + 1) == "the" and _word(tokens, i + 2) in ("morning", "afternoon", "evening"):
        return i + 3, Found(part=_PARTS[_word(tokens, i + 2)])
    if word == "at" and _word(tokens, i + 1) == "night":
        return i + 2, Found(part="night")
    if word in ("утром", "днем", "вечером", "ночью"):
        return i + 1, Found(part=_PARTS[word])
    return None


def _weekday_at(tokens: list[Token], i: int, allow_short: bool) -> int | None:
    word = _word(tokens, i)
    if word in _WEEKDAY_FULL:
        return _WEEKDAY_FULL[word]
    if allow_short and word in _WEEKDAY_SHORT:
        return _WEEKDAY_SHORT[word]
    return None


def _match_weekday(tokens: list[Token], i: int) -> Match | None:
    """friday / on fri / next monday / в пятницу / во вторник / в следующий понедельник."""
    j = i
    while _word(tokens, j) in _WEEKDAY_PREFIXES:
        j += 1
    day = _weekday_at(tokens, j, allow_short=j > i)
    if day is None:
        return None
    return j + 1, Found(weekday=day)


def _weekday_list(tokens: list[Token], i: int, plural: bool) -> tuple[tuple[int, ...], int] | None:
    days: list[int] = []
    j = i
    while True:
        word = _word(tokens, j)
        day = _WEEKDAY_PLURAL.get(word) if plural else None
        if day is None:
            day = _weekday_at(tokens, j, allow_short=True)
        if day is None:
            break
        days.append(day)
        j += 1
        if _word(tokens, j) in (",", "and", "и", "&"):
            nxt = _word(tokens, j + 1)
            if nxt in _WEEKDAY_PLURAL or nxt in _WEEKDAY_FULL or nxt in _WEEKDAY_SHORT:
                j += 1
                continue
        break
    if not days:
        return None
    return tuple(sorted(set(days))), j


def _match_date(tokens: list[Token], i: int) -> Match | None:
    """2026-12-25 / 25.12[.2026] / 25 december [2026] / december 25th / the 15th / 15 числа."""
    j = i
    if _word(tokens, j) == "on":
        j += 1
    if _word(tokens, j) == "the":
        j += 1
    if j >= len(tokens):
        return None
    token = tokens[j]
    if token.kind == "iso":
        year, month, day = (int(x) for x in token.text.split("-"))
        return _checked_date(j + 1, year, month, day)
    if token.kind == "dotted" and "," not in token.text and _word(tokens, i) not in _TIME_PREFIXES:
        parts = [int(x) for x in token.text.split(".")]
        year = parts[2] if len(parts) == 3 else None
        if year is not None and year < 100:
            year += 2000
        return _checked_date(j + 1, year, parts[1], parts[0])
    if token.kind == "num" and len(token.text) <= 2:
        day = int(token.text)
        k = j + 1
        ordinal = _word(tokens, k) in _ORDINAL_SUFFIXES
        if ordinal:
            k += 1
        if _word(tokens, k) == "of":
            k += 1
        if _word(tokens, k) in _MONTHS:
            month = _MONTHS[_word(tokens, k)]
            year, k = _year(tokens, k + 1)
            return _checked_date(k, year, month, day)
        if _word(tokens, k) in ("числа", "число"):
            return (k + 1, Found(month_day=day)) if 1 <= day <= 31 else None
        if ordinal and 1 <= day <= 31:  # "the 15th", "15-го"
            return j + 2, Found(month_day=day)
        return None
    if token.text in _MONTHS and j + 1 < len(tokens) and tokens[j + 1].kind == "num" and len(tokens[j + 1].text) <= 2:
        month, day = _MONTHS[token.text], int(tokens[j + 1].text)
        k = j + 2
        if _word(tokens, k) in _ORDINAL_SUFFIXES:
            k += 1
        year, after_year = _year(tokens, k + 1 if _word(tokens, k) == "," else k)
        return _checked_date(after_year if year is not None else k, year, month, day)
    return None


def _year(tokens: list[Token], k: int) -> tuple[int | None, int]:
    if k < len(tokens) and tokens[k].kind == "num" and len(tokens[k].text) == 4:
        k2 = k + 1
        if _word(tokens, k2) in ("года", "г", "год"):
            k2 += 1
        return int(tokens[k].text), k2
    return None, k


def _checked_date(end: int, year: int | None, month: int, day: int) -> Match | None:
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: 29 February stays possible
    except ValueError:
        return None
    return end, Found(date=(year, month, day))


def _match_recurrence(tokens: list[Token], i: int) -> Match | None:
    word = _word(tokens, i)
    if word in ("daily", "everyday", "ежедневно"):
        return i + 1, Found(every="daily")
    if word in ("weekly", "еженедельно"):
        return i + 1, Found(every="weekly")
    if word in ("monthly", "ежемесячно"):
        return i + 1, Found(every="monthly")
    if word in ("on", "по"):
        nxt = _word(tokens, i + 1)
        if nxt in ("weekdays", "workdays", "будням"):
            return i + 2, Found(every="weekly", every_weekdays=(0, 1, 2, 3, 4))
        if nxt in ("weekends", "выходным"):
            return i + 2, Found(every="weekly", every_weekdays=(5, 6))
        if nxt in _WEEKDAY_PLURAL:
            listed = _weekday_list(tokens, i + 1, plural=True)
            if listed:
                return listed[1], Found(every="weekly", every_weekdays=listed[0])
        return None
    if word in ("of", "каждого"):
        k = i + 1 if word == "каждого" else i + 2
        if word == "of" and _word(tokens, i + 1) not in ("every", "each", "the"):
            return None
        if _word(tokens, k) in ("month", "месяца"):
            return k + 1, Found(every="monthly")
        return None
    if word not in _EVERY:
        return None
    j = i + 1
    nxt = _word(tokens, j)
    if nxt in ("day", "день"):
        return j + 1, Found(every="daily")
    if nxt in ("morning", "afternoon", "evening", "night", "утро", "вечер"):
        part = {"утро": "morning", "вечер": "evening"}.get(nxt, nxt)
        return j + 1, Found(every="daily", part=part)
    if nxt in ("weekday", "workday") or (nxt == "будний" and _word(tokens, j + 1) == "день"):
        return j + (2 if nxt == "будний" else 1), Found(every="weekly", every_weekdays=(0, 1, 2, 3, 4))
    if nxt in ("weekend", "выходные"):
        return j + 1, Found(every="weekly", every_weekdays=(5, 6))
    if nxt in ("week", "неделю"):
        return j + 1, Found(every="weekly")
    if nxt in ("month", "месяц"):
        return j + 1, Found(every="monthly")
    if nxt in _UNITS or _quantity(tokens, j)[0] is not None and _word(tokens, _quantity(tokens, j)[1]) in _UNITS:
        unit = _UNITS.get(nxt) or _UNITS[_word(tokens, _quantity(tokens, j)[1])]
        if unit in ("minutes", "hours"):
            raise ReminderInputError("every_hour")
    listed = _weekday_list(tokens, j, plural=False)
    if listed:
        return listed[1], Found(every="weekly", every_weekdays=listed[0])
    # "every 15th", "каждое 15 число"
    if j < len(tokens) and tokens[j].kind == "num" and len(tokens[j].text) <= 2:
        day = int(tokens[j].text)
        k = j + 1
        if _word(tokens, k) in _ORDINAL_SUFFIXES or _word(tokens, k) in ("число", "числа"):
            k += 1
            if 1 <= day <= 31:
                return k, Found(every="monthly", month_day=day)
    return None


_MATCHERS = (_match_relative, _match_recurrence, _match_date, _match_weekday, _match_day, _match_part)


def _match_at(tokens: list[Token], i: int, found: Found) -> Match | None:
    """The longest single fragment starting at ``i``."""
    best: Match | None = None
    for matcher in _MATCHERS:
        result = matcher(tokens, i)
        if result and (best is None or result[0] > best[0]):
            best = result
    timed = _match_time(tokens, i, after_day=found.has_day)
    if timed and (best is None or timed[0] > best[0]):
        best = timed
    return best


def _match_span(tokens: list[Token], i: int) -> Match | None:
    """Fragments joined from ``i`` for as long as they agree with each other."""
    found, end, j = Found(), i, i
    while j < len(tokens):
        step = _match_at(tokens, j, found)
        if step is None and tokens[j].text in _FILLERS and j > i:
            step = _match_at(tokens, j + 1, found)
        if step is None:
            break
        merged = found.merge(step[1])
        if merged is None:
            break
        found, end, j = merged, step[0], step[0]
    return (end, found) if end > i else None


# --------------------------------------------------------------------------- resolving


def _clock_time(found: Found) -> time:
    if found.at is not None:
        at = found.at
        if found.part in ("afternoon", "evening", "night") and 1 <= at.hour < 12 and not (found.part == "night" and at.hour < 5):
            return at.replace(hour=at.hour + 12)
        return at
    if found.part:
        return PART_OF_DAY_TIMES[found.part]
    return DEFAULT_TIME


def _rule(found: Found, local_now: datetime) -> Rule:
    at = _clock_time(found)
    if found.every == "daily":
        return Rule("daily", at=at)
    if found.every == "weekly":
        days = found.every_weekdays or ((found.weekday,) if found.weekday is not None else (local_now.weekday(),))
        return Rule("weekly", at=at, weekdays=days)
    day = found.month_day or local_now.day
    return Rule("monthly", at=at, day=day)


def resolve(found: Found, now: datetime, tz_name: str) -> Schedule:
    """When ``found`` fires first (and how it repeats), seen from ``now``."""
    tz = zone(tz_name)
    local_now = now.astimezone(tz)
    if found.every:
        rule = _rule(found, local_now)
        return Schedule(rule.next_after(now, tz_name), rule)
    if found.elapsed is not None or found.wall_days is not None or found.wall_months is not None:
        return Schedule(_relative_moment(found, now, tz_name))
    at = _clock_time(found)
    today = local_now.date()
    if found.date is not None:
        year, month, day = found.date
        try:
            first = localize(datetime.combine(date(year or today.year, month, day), at), tz)
            if first <= now and year is None:
                first = localize(datetime.combine(_next_valid_year(today.year + 1, month, day), at), tz)
        except ValueError:
            first = localize(datetime.combine(_next_valid_year(today.year + 1, month, day), at), tz)
    elif found.weekday is not None:
        day_ = today + timedelta(days=(found.weekday - today.weekday()) % 7)
        first = localize(datetime.combine(day_, at), tz)
        if first <= now:
            first = localize(datetime.combine(day_ + timedelta(days=7), at), tz)
    elif found.month_day is not None:
        first = _next_month_day(found.month_day, at, now, tz_name)
    elif found.day_offset is not None:
        first = localize(datetime.combine(today + timedelta(days=found.day_offset), at), tz)
    else:
        # A time alone means its next occurrence: "at 8" said at 10 is tomorrow.
        first = localize(datetime.combine(today, at), tz)
        if first <= now:
            first = localize(datetime.combine(today + timedelta(days=1), at), tz)
    return Schedule(first)


def _next_valid_year(year: int, month: int, day: int) -> date:
    for candidate in range(year, year + 8):
        try:
            return date(candidate, month, day)
        except ValueError:
            continue  # 29 February
    raise ReminderInputError("no_time")


def _next_month_day(month_day: int, at: time, now: datetime, tz_name: str) -> datetime:
    tz = zone(tz_name)
    first_of_month = now.astimezone(tz).date().replace(day=1)
    for months in range(0, 14):
        start = add_months(first_of_month, months)
        try:
            candidate = localize(datetime.combine(start.replace(day=month_day), at), tz)
        except ValueError:
            continue  # this month has no such day
        if candidate > now:
            return candidate
    raise ReminderInputError("no_time")


def _relative_moment(found: Found, now: datetime, tz_name: str) -> datetime:
    moment = now + (found.elapsed or timedelta(0))
    if found.wall_days is None and found.wall_months is None:
        return moment
    tz = zone(tz_name)
    local = moment.astimezone(tz)
    day = add_months(local.date() + timedelta(days=found.wall_days or 0), found.wall_months or 0)
    at = _clock_time(found) if (found.at is not None or found.part) else local.time().replace(tzinfo=None)
    return localize(datetime.combine(day, at), tz)


# --------------------------------------------------------------------------- entry points


def format_local(moment: datetime, tz_name: str) -> str:
    """YYYY-MM-DD HH:MM on the user's wall clock (DESIGN.md section 3)."""
    return moment.astimezone(zone(tz_name)).strftime("%Y-%m-%d %H:%M")


def _check_future(schedule: Schedule, now: datetime, tz_name: str) -> Schedule:
    if schedule.first <= now:
        raise ReminderInputError("past", when=format_local(schedule.first, tz_name), zone=tz_name)
    if schedule.first - now > MAX_AHEAD:
        raise ReminderInputError("too_far", when=format_local(schedule.first, tz_name), zone=tz_name)
    return schedule


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ReminderInputError("empty_text")
    if len(text) > MAX_TEXT_CHARS:
        raise ReminderInputError("too_long", length=len(text), limit=MAX_TEXT_CHARS)
    return text


_LEADING = re.compile(
    r"^(?:remind\s+me\s+(?:to\s+|about\s+|that\s+)?|me\s+to\s+|to\s+|about\s+|that\s+|me\s+|"
    r"напомни(?:ть)?\s+(?:мне\s+)?|мне\s+|чтобы\s+|что\s+|о\s+том,?\s+что\s+|про\s+)",
    re.IGNORECASE,
)
_EDGES = " \t\n,.;:!-–—"


def _clean_text(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", text).strip(_EDGES)
    while True:
        stripped = _LEADING.sub("", text, count=1).strip(_EDGES)
        if stripped == text:
            return text
        text = stripped


def _best_span(tokens: list[Token]) -> tuple[int, int, Found] | None:
    best: tuple[tuple[int, int, int], int, int, Found] | None = None
    for i in range(len(tokens)):
        if tokens[i].text in _FILLERS:
            continue
        matched = _match_span(tokens, i)
        if matched is None:
            continue
        end, found = matched
        touches_edge = 1 if i == 0 or end == len(tokens) else 0
        score = (end - i, touches_edge, -i)
        if best is None or score > best[0]:
            best = (score, i, end, found)
    return (best[1], best[2], best[3]) if best else None


@contextmanager
def _within_the_calendar() -> Iterator[None]:
    """Input whose arithmetic leaves the calendar ("in 100000 years", a number
    of minutes too big for a timedelta) or whose rule never fires (cron
    "0 0 31 2 *") is refused like any unreadable time, not a crash."""
    try:
        yield
    except ReminderInputError:
        raise
    except RuleError as exc:
        raise ReminderInputError("bad_cron", detail=str(exc)) from None
    except OverflowError:  # a timedelta or an int past what the C types hold
        raise ReminderInputError("out_of_range") from None
    except ValueError as exc:
        if "out of range" not in str(exc):  # datetime's "year 102026 is out of range"; any other is a bug
            raise
        raise ReminderInputError("out_of_range") from None


def parse_reminder(request: str, tz_name: str, now: datetime) -> ParsedReminder:
    """/remind's argument: what to remind of and when. Raises ReminderInputError."""
    with _within_the_calendar():
        return _parse_reminder(request, tz_name, now)


def _parse_reminder(request: str, tz_name: str, now: datetime) -> ParsedReminder:
    request = request.strip()
    if not request:
        raise ReminderInputError("empty")
    if len(request) > MAX_TEXT_CHARS + 200:
        raise ReminderInputError("too_long", length=len(request), limit=MAX_TEXT_CHARS)
    cron = re.match(r"^cron\s+((?:\S+\s+){4}\S+)(?:\s+(.*))?$", request, re.IGNORECASE | re.DOTALL)
    if cron:
        rule = _cron_rule(cron.group(1))
        text = _check_text(_clean_text(cron.group(2) or ""))
        return ParsedReminder(text, _check_future(Schedule(rule.next_after(now, tz_name), rule), now, tz_name))
    negative = _NEGATIVE_DURATION.search(request)
    if negative:  # the tokens drop the sign: "in -5 minutes" read as "in 5 minutes"
        raise ReminderInputError("bad_date", value=negative.group(1))
    tokens = tokenize(request)
    span = _best_span(tokens)
    if span is None:
        raise ReminderInputError("no_time")
    start, end, found = span
    _refuse_impossible_dates(tokens[:start] + tokens[end:])
    text = request[: tokens[start].start] + " " + request[tokens[end - 1].end :]
    text = _check_text(_clean_text(text))
    return ParsedReminder(text, _check_future(resolve(found, now, tz_name), now, tz_name))


_NEGATIVE_DURATION = re.compile(
    r"(?:\bin|через)\s+([-−]\s*\d+(?:[.,]\d+)?\s*(?:"
    + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
    + r"))(?!\w)",
    re.IGNORECASE,
)


def _refuse_impossible_dates(leftover: list[Token]) -> None:
    """A date or time the user wrote that no calendar has ("2027-13-01",
    "25:00", "on 31.04", "February 30") is not read as a time, so the span
    found beside it would set the reminder on a guess ("tomorrow at 10" for
    "2027-13-01 10:00"). Refuse instead. Possible dates and times left in the
    text stay part of it ("in 5 minutes: the 14:00 call")."""
    for index, token in enumerate(leftover):
        before = leftover[index - 1] if index > 0 else None
        after = leftover[index + 1] if index + 1 < len(leftover) else None
        impossible = _impossible_date(token, before, after)
        if impossible:
            raise ReminderInputError("bad_date", value=impossible)


def _impossible_date(token: Token, before: Token | None, after: Token | None) -> str | None:
    """The words of an impossible date or time starting at ``token``, else None."""
    if token.kind == "clock":
        hour, minute = (int(part) for part in token.text.split(":"))
        return None if hour <= 23 and minute <= 59 else token.text
    if token.kind == "iso":
        year, month, day = (int(part) for part in token.text.split("-"))
        return None if _is_date(year, month, day) else token.text
    if token.kind == "dotted" and before is not None and before.text in ("on", "до", "на") and "," not in token.text:
        # "on 31.04"; without the preposition it may be a number ("2.5 kg").
        day, month = (int(part) for part in token.text.split(".")[:2])
        return None if _is_date(2028, month, day) else token.text
    if token.kind == "word" and token.text in _MONTHS and after is not None and after.kind == "num":
        day = int(after.text)
        # 2028 is a leap year: "February 29" exists. A number past 31 is not a day ("chapter march 45").
        return None if day > 31 or _is_date(2028, _MONTHS[token.text], day) else f"{token.text} {after.text}"
    if token.kind == "num" and after is not None and after.text in _MONTHS:
        day = int(token.text)  # "30 February", "30 февраля"
        return None if day > 31 or _is_date(2028, _MONTHS[after.text], day) else f"{token.text} {after.text}"
    return None


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _cron_rule(expression: str) -> Rule:
    try:
        return Rule("cron", cron=expression.strip())
    except RuleError as exc:
        raise ReminderInputError("bad_cron", detail=str(exc)) from None


def _whole_phrase(phrase: str) -> Found:
    tokens = tokenize(phrase)
    span = _best_span(tokens)
    if span is None:
        raise ReminderInputError("no_time")
    start, end, found = span
    leftover = [t for t in tokens[:start] + tokens[end:] if t.text not in _FILLERS]
    if leftover:
        raise ReminderInputError("unparsed", phrase=phrase, rest=" ".join(t.text for t in leftover))
    return found


def _iso(phrase: str, tz_name: str) -> datetime | None:
    text = phrase.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) == 10:  # a date alone: the default hour, like "on 25 december"
        moment = datetime.combine(moment.date(), DEFAULT_TIME)
    if moment.tzinfo is None:
        return localize(moment, zone(tz_name))
    return moment.astimezone(timezone.utc)


def parse_when(when: str, tz_name: str, now: datetime, recurrence: str | None = None) -> Schedule:
    """The model's create_reminder(when, recurrence): ISO 8601 or the /remind
    grammar for ``when``; ``recurrence`` is daily | weekly | monthly |
    weekdays | weekends, a phrase such as "every monday", or a cron line."""
    with _within_the_calendar():
        return _parse_when(when, tz_name, now, recurrence)


def _parse_when(when: str, tz_name: str, now: datetime, recurrence: str | None) -> Schedule:
    when = (when or "").strip()
    if not when:
        raise ReminderInputError("no_time")
    if len(when) > 200:
        raise ReminderInputError("unparsed", phrase=when[:40] + "…", rest="")
    moment = _iso(when, tz_name)
    if recurrence and recurrence.strip():
        return _check_future(_recurring(when, moment, recurrence.strip(), tz_name, now), now, tz_name)
    if moment is not None:
        return _check_future(Schedule(moment), now, tz_name)
    return _check_future(resolve(_whole_phrase(when), now, tz_name), now, tz_name)


_RECURRENCE_WORDS = {
    "daily": Found(every="daily"), "weekly": Found(every="weekly"), "monthly": Found(every="monthly"),
    "weekdays": Found(every="weekly", every_weekdays=(0, 1, 2, 3, 4)),
    "weekends": Found(every="weekly", every_weekdays=(5, 6)),
}


def _recurring(when: str, moment: datetime | None, recurrence: str, tz_name: str, now: datetime) -> Schedule:
    if len(recurrence.split()) == 5 and re.match(r"^[\d*]", recurrence):
        rule = _cron_rule(recurrence)
        start = moment or resolve(_whole_phrase(when), now, tz_name).first
        return Schedule(rule.next_after(max(start, now) - timedelta(seconds=1), tz_name), rule)
    try:
        repeat = _RECURRENCE_WORDS.get(recurrence.lower()) or _whole_phrase(recurrence)
    except ReminderInputError:
        raise ReminderInputError("bad_recurrence", recurrence=recurrence[:60]) from None
    if not repeat.every:
        raise ReminderInputError("bad_recurrence", recurrence=recurrence)
    tz = zone(tz_name)
    if moment is not None:
        start = moment
    else:
        found = _whole_phrase(when)
        combined = found.merge(repeat)
        if combined is not None and combined.every:
            rule = _rule(combined, now.astimezone(tz))
            return Schedule(rule.next_after(now, tz_name), rule)
        start = resolve(found, now, tz_name).first
    local = start.astimezone(tz)
    # The rule takes its time of day (and weekday, day of month) from the first firing.
    anchored = replace(repeat, at=repeat.at or local.time().replace(second=0, microsecond=0, tzinfo=None))
    if anchored.every == "weekly" and not anchored.every_weekdays:
        anchored = replace(anchored, every_weekdays=(local.weekday(),))
    if anchored.every == "monthly" and anchored.month_day is None:
        anchored = replace(anchored, month_day=local.day)
    rule = _rule(anchored, local)
    return Schedule(rule.next_after(max(start, now) - timedelta(seconds=1), tz_name), rule)
