"""Time as the reminders see it. Production uses the system clock; tests and
the benchmark move "now" wherever they need it, so nobody waits in real time
for a reminder that is due tomorrow."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware, in UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ShiftedClock:
    """Real time moved by an offset: it keeps ticking at real speed (so the
    real APScheduler still times firings), but ``set``/``advance`` jump it.

    After a jump, call ``ReminderScheduler.resync()`` so that timers armed
    for the old "now" are re-armed."""

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = timedelta(0)
        if start is not None:
            self.set(start)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._offset

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("ShiftedClock.set needs an aware datetime")
        self._offset = moment - datetime.now(timezone.utc)

    def advance(self, delta: timedelta) -> None:
        self._offset += delta
