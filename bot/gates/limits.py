"""Per-user limits: a token-bucket rate limit and a daily token budget, and
the gates that apply them. Admins are exempt from both.

Everything here is in memory and per user, with bounded size; the clocks are
injected so the maths is tested without waiting."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone

import pytz

import bot.gates.access_strings  # noqa: F401  (registers the strings)
from bot.gates.chain import MAX_TRACKED_USERS, GateRequest, Monotonic, Verdict
from bot.runtime.events import TurnFinished
from bot.i18n import t
from bot.storage.admin import usage_day

Now = Callable[[], datetime]


@dataclass
class _Bucket:
    tokens: float
    updated: float
    quiet_until: float = 0.0  # no further warning before this moment


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    # Seconds until the next message would be accepted (0 when allowed).
    retry_after: float = 0.0
    # Refused and the user has not been warned in this window: tell them.
    warn: bool = False

    @property
    def retry_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class RateLimiter:
    """A token bucket per user: ``burst`` messages at once, refilled at
    ``per_minute`` messages per minute. A refused message warns at most once
    per ``warn_window`` seconds, so a flooder gets one warning, not one per
    message.

    Hand-written because the libraries at hand answer other questions:
    aiolimiter makes callers *wait* for one shared resource, while a chat
    bot must *refuse* at once and keep one bucket per user. A bucket that has
    refilled completely is the same as no bucket, so idle users are dropped
    as the oldest entries are touched: memory follows recently active users,
    and MAX_TRACKED_USERS caps it outright."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        warn_window: float = 60.0,
        max_users: int = MAX_TRACKED_USERS,
        clock: Monotonic = time.monotonic,
    ) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self._rate = per_minute / 60.0  # tokens per second
        self._burst = float(burst)
        self._warn_window = warn_window
        self._max_users = max_users
        self._clock = clock
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def hit(self, user_id: int) -> RateDecision:
        """Counts one message of ``user_id``; says whether it may go on."""
        if not self.enabled:
            return RateDecision(True)
        now = self._clock()
        bucket = self._buckets.pop(user_id, None) or _Bucket(self._burst, now)
        self._refill(bucket, now)
        self._buckets[user_id] = bucket  # most recently used last
        self._drop_idle(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return RateDecision(True)
        self.refused += 1
        retry_after = (1.0 - bucket.tokens) / self._rate
        warn = now >= bucket.quiet_until
        if warn:
            bucket.quiet_until = now + max(self._warn_window, retry_after)
        return RateDecision(False, retry_after, warn)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.updated = now

    def _drop_idle(self, now: float) -> None:
        # Look at a couple of the least recently used buckets per call: the
        # amortized cost is O(1) and idle buckets never pile up.
        for _ in range(2):
            if len(self._buckets) <= 1:
                return
            user_id, oldest = next(iter(self._buckets.items()))
            self._refill(oldest, now)
            if oldest.tokens >= self._burst and now >= oldest.quiet_until:
                del self._buckets[user_id]
            else:
                break
        while len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)


# --- daily token budget --------------------------------------------------------


def next_reset(now: datetime) -> datetime:
    """Budgets reset at 00:00 UTC: the next such moment after ``now``."""
    today = usage_day(now)
    return datetime.combine(today + timedelta(days=1), dtime(0, 0), tzinfo=timezone.utc)


def format_reset(reset_at: datetime, tz_name: str) -> str:
    """``YYYY-MM-DD HH:MM`` on the user's wall clock (DESIGN.md's format for times)."""
    return reset_at.astimezone(pytz.timezone(tz_name)).strftime("%Y-%m-%d %H:%M")


def effective_budget(override: int | None, default: int) -> int:
    """The user's daily budget in tokens; 0 means unlimited. A per-user
    override (0 included) wins over the default."""
    return default if override is None else override


def pending_tokens(events: Sequence[TurnFinished], user_id: int, day: date) -> int:
    """Tokens of ``user_id`` on ``day`` that the usage writer holds but has not written yet."""
    return sum(e.tokens_in + e.tokens_out for e in events if e.user_id == user_id and usage_day(e.at) == day)


@dataclass(frozen=True)
class BudgetState:
    limit: int  # 0: unlimited
    used: int
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit


class DailyBudget:
    """Tokens used today (UTC) against the user's budget. Usage is what the
    database has plus what the batch writer still holds, so a quick series
    of turns cannot run past the budget during the flush interval. The
    writer's list is read before the database: if a flush lands between the
    two reads, the turns count twice for a moment (refusing early) rather
    than not at all (letting a user past the budget)."""

    def __init__(
        self,
        tokens_on: Callable[[int, date], Awaitable[int]],
        pending: Callable[[], Sequence[TurnFinished]],
        *,
        default: int,
        now: Now,
    ) -> None:
        self._tokens_on = tokens_on
        self._pending = pending
        self._default = default
        self._now = now

    @property
    def default(self) -> int:
        return self._default

    async def state(self, user_id: int, override: int | None) -> BudgetState:
        now = self._now()
        limit = effective_budget(override, self._default)
        day = usage_day(now)
        held = pending_tokens(self._pending(), user_id, day)
        used = held + await self._tokens_on(user_id, day)
        return BudgetState(limit, used, next_reset(now))

    async def limited(self, user_id: int, override: int | None) -> BudgetState | None:
        """The state when the user has a budget at all, without touching the
        database for users who have none."""
        if effective_budget(override, self._default) == 0:
            return None
        return await self.state(user_id, override)


def format_tokens(count: int, language: str) -> str:
    grouped = f"{count:,}"
    return grouped.replace(",", "\u00a0") if language == "ru" else grouped


# --- gates --------------------------------------------------------------------


class RateLimitCheck:
    """Every message and command counts (a flood of /help costs as much to
    answer as a flood of text); one warning per window, then silence."""

    name = "rate"

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def check(self, request: GateRequest) -> Verdict | None:
        ctx = request.ctx
        if ctx.is_admin:
            return None
        decision = self._limiter.hit(ctx.user_id)
        if decision.allowed:
            return None
        notice = t("limit_slow_down", ctx.language, seconds=decision.retry_seconds) if decision.warn else None
        return Verdict(False, notice, retry_after=decision.retry_after)


class QuotaCheck:
    """Only messages that reach the model spend tokens, so only they are
    held to the daily budget: /help, /reminders, /memory keep working for
    a user who spent today's tokens."""

    name = "quota"

    def __init__(self, budget: DailyBudget) -> None:
        self._budget = budget

    async def check(self, request: GateRequest) -> Verdict | None:
        ctx = request.ctx
        if not request.reaches_model or ctx.is_admin:
            return None
        state = await self._budget.limited(ctx.user_id, ctx.token_budget)
        if state is None or not state.exhausted:
            return None
        when = format_reset(state.resets_at, ctx.timezone)
        limit = format_tokens(state.limit, ctx.language)
        notice = t("limit_budget_used", ctx.language, limit=limit, when=when, zone=ctx.timezone)
        return Verdict(False, notice, retry_after=(state.resets_at - ctx.received_at).total_seconds())
