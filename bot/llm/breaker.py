"""A circuit breaker per endpoint: an endpoint that keeps failing is skipped at
no cost until a cool-down passes, then one probe request decides."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        window: float,
        cooldown: float,
        hard_cooldown: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._window = window
        self._cooldown = cooldown
        self._hard_cooldown = hard_cooldown
        self._clock = clock
        self._failures: deque[float] = deque()
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def open_until(self) -> float:
        """When an open breaker lets its next probe through (0 when closed)."""
        return self._open_until if self._state is not BreakerState.CLOSED else 0.0

    def allow_request(self) -> bool:
        """True if a request may go to the endpoint now. In half-open state
        exactly one caller gets True (the probe) until it reports back."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._state = BreakerState.HALF_OPEN
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures.clear()
        self._probe_in_flight = False

    def record_failure(self, *, hard: bool = False) -> None:
        """A failed request. ``hard`` (wrong key, unknown model) opens at once
        and for longer: retrying soon cannot help."""
        now = self._clock()
        self._probe_in_flight = False
        if hard:
            self._open(now, self._hard_cooldown)
            return
        if self._state is BreakerState.HALF_OPEN:
            self._open(now, self._cooldown)  # the probe failed
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self._window:
            self._failures.popleft()
        if len(self._failures) >= self._threshold:
            self._open(now, self._cooldown)

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the caller was cancelled)."""
        self._probe_in_flight = False

    def _open(self, now: float, cooldown: float) -> None:
        self._state = BreakerState.OPEN
        self._open_until = now + cooldown
        self._failures.clear()
