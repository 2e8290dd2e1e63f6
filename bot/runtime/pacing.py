"""A pacer for bulk sends (fired reminders and broadcasts).

Telegram allows about 30 messages per second to different chats. Interactive
replies are not capped (see the rate limiter in channels/telegram/channel.py),
so anything that sends in bulk takes a permit from one shared Pacer first.
Permits go out on a grid of 1/rate seconds with no burst allowance: a burst
of 1,000 then never puts more than ``rate + 1.5`` sends into any one-second
window, which is how Telegram counts (see __init__ for the grid). When Telegram answers a bulk send with
429 (flood control), the sender calls ``pause``: no permit goes out until
the retry-after has passed, for any bulk sender, since the limit is per bot."""

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
        self._next = 0.0
        self._paused_until = 0.0
        self._waiting = 0
        # Single file (asyncio.Lock is FIFO), on a grid of 1/rate steps.
        # Booking future slots for every waiter instead lets all sleepers wake
        # at once after the process stalls (a busy machine), and the catch-up
        # burst is exactly what Telegram answers with 429. Spacing each permit
        # from the moment the previous one was really granted avoids that but
        # drifts: every wake-up is a little late (2-3 ms on a busy machine),
        # which cut 28/s to 26.9/s. So a permit granted at most half a step
        # late keeps the grid, and a later one (a stall) starts a new grid
        # from itself: no catch-up, no drift. Any window of W seconds then
        # holds at most rate * W + 1.5 permits.
        self._lock = asyncio.Lock()
        self.granted = 0

    async def acquire(self) -> None:
        """Wait for the next permit; permits go out in call order."""
        self._waiting += 1
        try:
            async with self._lock:
                # A loop, not one sleep: a pause may arrive while we wait.
                while (wait := max(self._next, self._paused_until) - self._monotonic()) > 0:
                    await self._sleep(wait)
                now = self._monotonic()
                on_grid = now - self._next <= self._interval / 2
                self._next = (self._next if on_grid else now) + self._interval
                self.granted += 1
        finally:
            self._waiting -= 1

    def pause(self, seconds: float) -> None:
        """Hold every permit for ``seconds`` from now (Telegram's retry-after)."""
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    @property
    def backlog_seconds(self) -> float:
        """Roughly how long a permit asked for now would wait."""
        ready_at = max(self._next, self._paused_until)
        return max(0.0, ready_at - self._monotonic()) + self._waiting * self._interval
