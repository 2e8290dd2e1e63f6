"""A pacer for bulk sends (fired reminders now, broadcasts later).

Telegram allows about 30 messages per second to different chats. Interactive
replies are not capped (see the rate limiter in channels/telegram/channel.py),
so anything that sends in bulk takes a permit from one shared Pacer first.
Permits are spaced evenly at 1/rate seconds with no burst allowance: a burst
of 1,000 then never puts more than ``rate`` sends into any one-second window,
which is how Telegram counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


class Pacer:
    def __init__(
        self,
        rate: float,
        *,
        monotonic: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("Pacer rate must be positive (messages per second)")
        self.rate = rate
        self._interval = 1.0 / rate
        self._monotonic = monotonic
        self._sleep = sleep
        self._next_slot = 0.0
        self.granted = 0

    async def acquire(self) -> None:
        """Wait for the next free slot. Slots are handed out in call order:
        each caller books its slot before sleeping, so waiters never race."""
        now = self._monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        self.granted += 1
        if slot > now:
            await self._sleep(slot - now)

    @property
    def backlog_seconds(self) -> float:
        """How long a permit asked for now would wait."""
        return max(0.0, self._next_slot - self._monotonic())
