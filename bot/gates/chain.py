"""The gates a message passes before the bot acts on it (DESIGN.md section 2:
banned? allow-list? rate limit? daily quota?), as small checks run in order
by a GateChain. A check returns None to let the message on, or a Verdict:
refused (with an optional notice for the user), or passed with a notice
(an invite just admitted them).

Refusals must not turn the bot into an amplifier: a stranger, a banned user
or a flooder is told once per interval, then the bot stays quiet. The
NoticeLimiter below is that memory."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.context import RequestContext

Monotonic = Callable[[], float]

# More users than a VPS bot sees in a day; bounds memory under a flood of
# fresh accounts (an entry is ~100 bytes).
MAX_TRACKED_USERS = 100_000


@dataclass(frozen=True)
class GateRequest:
    ctx: RequestContext
    # The message goes to the model (text, a document): the daily quota applies.
    reaches_model: bool = False
    # The argument of /start (a deep link's payload: an invite code).
    start_payload: str | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    notice: str | None = None  # said to the user; None: stay silent
    retry_after: float | None = None  # a limit: seconds until the user may try again


@dataclass(frozen=True)
class GateResult:
    passed: bool
    notices: tuple[str, ...] = ()
    refused_by: str | None = None
    retry_after: float | None = None


class Check(Protocol):
    name: str

    async def check(self, request: GateRequest) -> Verdict | None: ...


class GateChain:
    """Runs the checks in order; the first refusal ends the run."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self._checks = tuple(checks)
        # How many messages each check refused (tests wait on it; statistics may show it).
        self.refusals: Counter[str] = Counter()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._checks)

    async def check(self, request: GateRequest) -> GateResult:
        notices: list[str] = []
        for gate in self._checks:
            verdict = await gate.check(request)
            if verdict is None:
                continue
            if verdict.notice:
                notices.append(verdict.notice)
            if not verdict.passed:
                self.refusals[gate.name] += 1
                return GateResult(False, tuple(notices), gate.name, verdict.retry_after)
        return GateResult(True, tuple(notices))


class NoticeLimiter:
    """Remembers, per key, that a notice was given, for ``interval`` seconds.
    ``should_notify(key)`` is True at most once per interval per key.

    Bounded: entries expire in insertion order (they all share one
    interval), and past ``max_keys`` the oldest is forgotten, which at worst
    means someone gets a notice a second time."""

    def __init__(self, interval: float, *, max_keys: int = MAX_TRACKED_USERS, clock: Monotonic = time.monotonic) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._until: OrderedDict[Hashable, float] = OrderedDict()

    def should_notify(self, key: Hashable) -> bool:
        now = self._clock()
        self._expire(now)
        if key in self._until:
            return False
        self._until[key] = now + self._interval
        if len(self._until) > self._max_keys:
            self._until.popitem(last=False)
        return True

    def forget(self, key: Hashable) -> None:
        """The next notice for ``key`` goes out (e.g. after an unban, a re-ban is told again)."""
        self._until.pop(key, None)

    def __len__(self) -> int:
        return len(self._until)

    def _expire(self, now: float) -> None:
        while self._until:
            key, until = next(iter(self._until.items()))
            if until > now:
                return
            del self._until[key]
