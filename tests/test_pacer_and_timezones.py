"""The bulk-send pacer (with a fake clock: no real waiting) and time zone lookup."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from bot.runtime.pacing import Pacer
from bot.reminders.timezones import describe, lookup_zone, zone_near


class FakeTime:
    """Time moves only when someone sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def max_in_window(times: list[float], window: float) -> int:
    ordered, best, start = sorted(times), 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_a_burst_of_1000_never_exceeds_the_rate_in_any_second() -> None:
    clock = FakeTime()
    pacer = Pacer(28, monotonic=clock.monotonic, sleep=clock.sleep)
    granted: list[float] = []

    async def send() -> None:
        await pacer.acquire()
        granted.append(clock.now)

    await asyncio.gather(*(send() for _ in range(1000)))
    assert len(granted) == 1000
    assert max_in_window(granted, 1.0) <= 29  # evenly spaced: 28 intervals fit in a second
    assert max(granted) - min(granted) == pytest.approx(999 / 28)
    assert pacer.granted == 1000


async def test_a_stall_does_not_release_a_catch_up_burst() -> None:
    clock = FakeTime()
    pacer = Pacer(10, monotonic=clock.monotonic, sleep=clock.sleep)
    granted: list[float] = []
    for _ in range(3):
        await pacer.acquire()
        granted.append(clock.now)
    clock.now += 2.0  # the process was descheduled for two seconds
    for _ in range(3):
        await pacer.acquire()
        granted.append(clock.now)
    gaps = [b - a for a, b in zip(granted, granted[1:])]
    assert min(gaps) == pytest.approx(0.1)


async def test_an_idle_pacer_does_not_delay() -> None:
    clock = FakeTime()
    pacer = Pacer(10, monotonic=clock.monotonic, sleep=clock.sleep)
    await pacer.acquire()
    clock.now += 5
    start = clock.now
    await pacer.acquire()
    assert clock.now == start and pacer.backlog_seconds == pytest.approx(0.1)


def test_a_pacer_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        Pacer(0)


@pytest.mark.parametrize(
    ("query", "exact", "suggested"),
    [
        ("Europe/Moscow", "Europe/Moscow", None),
        ("europe/berlin", "Europe/Berlin", None),
        ("UTC", "UTC", None),
        ("UTC+3", "Etc/GMT-3", None),
        ("gmt-5", "Etc/GMT+5", None),
        # The offsets run from UTC-12 to UTC+14; none beyond has a zone.
        ("UTC+14", "Etc/GMT-14", None),
        ("UTC-12", "Etc/GMT+12", None),
        ("UTC-13", None, None),
        ("GMT-14", None, None),
        ("UTC+15", None, None),
        ("Moscow", None, "Europe/Moscow"),
        ("new york", None, "America/New_York"),
        ("Germany", None, "Europe/Berlin"),
        ("Москва", None, "Europe/Moscow"),
        ("Германия", None, "Europe/Berlin"),
        ("Berln", None, "Europe/Berlin"),
        ("United States", None, "America/Los_Angeles"),
    ],
)
def test_zone_lookup(query: str, exact: str | None, suggested: str | None) -> None:
    found = lookup_zone(query)
    assert found.exact == exact
    if suggested:
        assert suggested in found.suggestions


def test_unknown_places_get_no_suggestion_rather_than_a_wrong_one() -> None:
    for nonsense in ("Narnia", "", "   ", "x" * 300, "🙂"):
        assert lookup_zone(nonsense).exact is None
    assert lookup_zone("Narnia").suggestions == ()


@pytest.mark.parametrize(
    ("lat", "lon", "zone"),
    [
        (52.52, 13.40, "Europe/Berlin"),
        (55.75, 37.62, "Europe/Moscow"),
        (40.71, -74.0, "America/New_York"),
        (34.05, -118.24, "America/Los_Angeles"),
        (-33.87, 151.21, "Australia/Sydney"),
        (35.68, 139.69, "Asia/Tokyo"),
    ],
)
def test_a_location_maps_to_the_zone_of_the_nearest_principal_city(lat: float, lon: float, zone: str) -> None:
    assert zone_near(lat, lon) == zone


def test_describe_gives_local_time_and_offset() -> None:
    assert describe("Asia/Kolkata", datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)) == ("2026-11-21 14:30", "+05:30")
