"""Finding a user's time zone from what they type or where they are.

Everything comes from tables pytz ships (the IANA zone names, country
names, country -> zones, and zone1970.tab with each zone's principal city
coordinates), plus a short table of Russian names. No network."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pytz

MAX_SUGGESTIONS = 10

# Russian names people type for common countries and cities.
_RUSSIAN_NAMES: dict[str, str] = {
    "москва": "Europe/Moscow", "санкт-петербург": "Europe/Moscow", "питер": "Europe/Moscow",
    "петербург": "Europe/Moscow", "казань": "Europe/Moscow", "нижний новгород": "Europe/Moscow",
    "самара": "Europe/Samara", "екатеринбург": "Asia/Yekaterinburg", "новосибирск": "Asia/Novosibirsk",
    "омск": "Asia/Omsk", "красноярск": "Asia/Krasnoyarsk", "иркутск": "Asia/Irkutsk",
    "владивосток": "Asia/Vladivostok", "хабаровск": "Asia/Vladivostok", "калининград": "Europe/Kaliningrad",
    "киев": "Europe/Kyiv", "киів": "Europe/Kyiv", "минск": "Europe/Minsk", "алматы": "Asia/Almaty",
    "астана": "Asia/Almaty", "ташкент": "Asia/Tashkent", "тбилиси": "Asia/Tbilisi", "ереван": "Asia/Yerevan",
    "баку": "Asia/Baku", "рига": "Europe/Riga", "вильнюс": "Europe/Vilnius", "таллин": "Europe/Tallinn",
    "берлин": "Europe/Berlin", "лондон": "Europe/London", "париж": "Europe/Paris", "рим": "Europe/Rome",
    "мадрид": "Europe/Madrid", "прага": "Europe/Prague", "варшава": "Europe/Warsaw", "вена": "Europe/Vienna",
    "стамбул": "Europe/Istanbul", "дубай": "Asia/Dubai", "нью-йорк": "America/New_York",
    "лос-анджелес": "America/Los_Angeles", "токио": "Asia/Tokyo", "пекин": "Asia/Shanghai",
    "бангкок": "Asia/Bangkok", "тель-авив": "Asia/Jerusalem", "белград": "Europe/Belgrade",
    "россия": "RU", "германия": "DE", "украина": "UA", "беларусь": "BY", "казахстан": "KZ",
    "узбекистан": "UZ", "грузия": "GE", "армения": "AM", "азербайджан": "AZ", "латвия": "LV",
    "литва": "LT", "эстония": "EE", "польша": "PL", "чехия": "CZ", "франция": "FR", "италия": "IT",
    "испания": "ES", "португалия": "PT", "великобритания": "GB", "англия": "GB", "сша": "US",
    "америка": "US", "канада": "CA", "турция": "TR", "израиль": "IL", "оаэ": "AE", "китай": "CN",
    "япония": "JP", "таиланд": "TH", "сербия": "RS", "черногория": "ME", "кипр": "CY", "греция": "GR",
    "нидерланды": "NL", "финляндия": "FI", "швеция": "SE", "норвегия": "NO", "австрия": "AT",
    "швейцария": "CH", "индия": "IN", "бразилия": "BR", "мексика": "MX", "австралия": "AU",
}
_COUNTRY_ALIASES = {"usa": "US", "america": "US", "uk": "GB", "england": "GB", "britain": "GB", "uae": "AE", "russia": "RU"}


@dataclass(frozen=True)
class ZoneLookup:
    """Exactly one zone the text names, or zones to choose from (maybe none)."""

    exact: str | None
    suggestions: tuple[str, ...] = ()


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower().replace("ё", "е"))


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """lower-case zone name -> canonical spelling (common zones plus old aliases)."""
    return {name.lower(): name for name in pytz.all_timezones}


@lru_cache(maxsize=1)
def _cities() -> dict[str, list[str]]:
    """City (last part of a zone name) -> zones, e.g. 'moscow' -> ['Europe/Moscow']."""
    cities: dict[str, list[str]] = {}
    for name in pytz.common_timezones:
        if "/" in name:
            cities.setdefault(_key(name.rsplit("/", 1)[1]), []).append(name)
    return cities


@lru_cache(maxsize=1)
def _countries() -> dict[str, str]:
    names = {_key(name): code for code, name in pytz.country_names.items()}
    names.update({_key(k): v for k, v in _COUNTRY_ALIASES.items()})
    return names


_OFFSET = re.compile(r"^(?:utc|gmt)\s*([+-])\s*(\d{1,2})$")


def lookup_zone(text: str) -> ZoneLookup:
    """What the user typed after /timezone: a zone name (any case), UTC+3,
    a city, a country, or something close to one of those."""
    raw = text.strip()
    key = _key(raw)
    if not key:
        return ZoneLookup(None)
    compact = raw.lower().replace(" ", "")
    if compact in _zone_names():
        return ZoneLookup(_zone_names()[compact])
    offset = _OFFSET.match(compact)
    if offset:
        sign, hours = offset.groups()
        if int(hours) == 0:
            return ZoneLookup("UTC")
        # Etc/GMT names have the sign inverted (POSIX): UTC+3 is Etc/GMT-3.
        # They run from UTC-12 to UTC+14: UTC-13 has no zone to name.
        name = f"Etc/GMT{'-' if sign == '+' else '+'}{int(hours)}"
        if name.lower() in _zone_names():
            return ZoneLookup(name)
    if key in _RUSSIAN_NAMES:
        key = _RUSSIAN_NAMES[key].lower() if "/" in _RUSSIAN_NAMES[key] else _RUSSIAN_NAMES[key]
        if "/" in key:
            return ZoneLookup(None, (_zone_names()[key],))
        return ZoneLookup(None, _country_zones(key))
    if key in _cities():
        return ZoneLookup(None, tuple(_cities()[key][:MAX_SUGGESTIONS]))
    if key in _countries():
        return ZoneLookup(None, _country_zones(_countries()[key]))
    if len(key) == 2 and key.upper() in pytz.country_timezones:
        return ZoneLookup(None, _country_zones(key.upper()))
    return ZoneLookup(None, _close_matches(key))


def _country_zones(code: str) -> tuple[str, ...]:
    """A country's zones, one per distinct (winter, summer) offset: the US gets
    New York, Chicago, Denver, Phoenix, Los Angeles... rather than eight
    Indiana counties that share New York's clock."""
    picked: dict[tuple[object, object], str] = {}
    for name in pytz.country_timezones.get(code.upper(), ()):
        tz = pytz.timezone(name)
        offsets = (tz.utcoffset(datetime(2026, 1, 15), is_dst=False), tz.utcoffset(datetime(2026, 7, 15), is_dst=False))
        picked.setdefault(offsets, name)
    return tuple(list(picked.values())[:MAX_SUGGESTIONS])


def _close_matches(key: str) -> tuple[str, ...]:
    found: list[str] = []
    for city in difflib.get_close_matches(key, list(_cities()), n=4, cutoff=0.8):
        found += _cities()[city]
    for country in difflib.get_close_matches(key, list(_countries()), n=2, cutoff=0.85):
        found += _country_zones(_countries()[country])
    for name in difflib.get_close_matches(key, list(_zone_names()), n=3, cutoff=0.8):
        found.append(_zone_names()[name])
    unique = list(dict.fromkeys(found))
    return tuple(unique[:MAX_SUGGESTIONS])


# --- location ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    zone: str
    lat: float
    lon: float


def _coordinate(text: str, degree_digits: int) -> float:
    sign = -1.0 if text[0] == "-" else 1.0
    digits = text[1:]
    degrees = int(digits[:degree_digits])
    minutes = int(digits[degree_digits : degree_digits + 2])
    seconds = int(digits[degree_digits + 2 : degree_digits + 4] or 0)
    return sign * (degrees + minutes / 60 + seconds / 3600)


@lru_cache(maxsize=1)
def _places() -> tuple[_Place, ...]:
    table = Path(pytz.__file__).parent / "zoneinfo" / "zone1970.tab"
    places = []
    for line in table.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, coordinates, name = line.split("\t")[:3]
        split = max(coordinates.rfind("+"), coordinates.rfind("-"))
        lat, lon = coordinates[:split], coordinates[split:]
        places.append(_Place(name, _coordinate(lat, 2), _coordinate(lon, 3)))
    return tuple(places)


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


def zone_near(latitude: float, longitude: float) -> str:
    """The zone whose principal city is nearest. Right for most places; near a
    border it can pick the neighbour's zone, so the user is asked to confirm."""
    nearest = min(_places(), key=lambda p: _distance_km(latitude, longitude, p.lat, p.lon))
    return nearest.zone


def describe(zone_name: str, now: datetime) -> tuple[str, str]:
    """(local time as YYYY-MM-DD HH:MM, UTC offset as +03:00) for a zone."""
    local = now.astimezone(pytz.timezone(zone_name))
    offset = local.strftime("%z")
    return local.strftime("%Y-%m-%d %H:%M"), f"{offset[:3]}:{offset[3:]}"
