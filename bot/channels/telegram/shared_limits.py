"""Telegram's flood limits, shared by every process of the bot through Redis.

Telegram counts per bot token: about 30 messages a second overall, about one
a second per chat, 20 a minute per group, and past them it answers 429 with
retry_after. In the scaled mode several workers send through one token, so a
limiter inside each process (PTB's AIORateLimiter) would let N workers send N
times too much. Here each limit is a moving window of the `limits` library
kept in Redis, and every process draws from the same windows before each call
that puts a message into a chat.

Windows are stamped with each process's wall clock (the library's choice), so
workers on several machines need their clocks in sync (NTP), as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.util import WindowStats
from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter, BaseRateLimiter

from bot.channels.telegram.outbound import retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")
JSONResult = bool | dict[str, Any] | list[dict[str, Any]]
Callback = Callable[..., Coroutine[Any, Any, JSONResult]]
Limit = tuple[RateLimitItem, tuple[str, ...]]

# A window that should already be open but refuses (clocks of two processes a
# little apart) is asked again after this long, never in a busy loop.
_MIN_WAIT = 0.01

# Calls with a chat_id that put nothing into the chat's history: a draft is
# the live preview of a streamed answer (Bot API 10), a chat action the
# "typing..." status. Pacing them would delay the very replies they announce.
_NOT_COUNTED = frozenset({"sendMessageDraft", "sendChatAction"})
_SENDING = ("send", "edit", "copyMessage", "forwardMessage", "stopPoll")


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's limits in the `limits` notation ("30/second", "3 per 2 seconds")."""

    overall: str = "30/second"
    private_chat: str = "1/second"
    group: str = "20/minute"
    # allow_paid_broadcast lifts the overall limit to 1000/s (paid in Stars).
    paid_broadcast: str = "1000/second"


def limited_chat(endpoint: str, data: Mapping[str, Any]) -> int | str | None:
    """The chat a call sends to when Telegram's flood limits count it, else None
    (getMe, getUpdates, drafts, chat actions, inline-message edits ...)."""
    if endpoint in _NOT_COUNTED or not endpoint.startswith(_SENDING):
        return None
    chat_id = data.get("chat_id")
    if chat_id is None:
        return None
    with suppress(ValueError, TypeError):
        return int(chat_id)
    return str(chat_id)


def is_group(chat: int | str) -> bool:
    # Negative ids are groups, supergroups and channels; an @username can only
    # name a channel or a supergroup.
    return isinstance(chat, str) or chat < 0


class FailoverLimiter:
    """The shared windows in Redis while Redis answers; this process's own
    windows while it does not.

    Why a fallback at all: a Redis outage must not silence the bot. Each
    process then paces itself alone, so N workers may together exceed the
    overall limit until Redis is back; Telegram's 429s (honored) are the
    backstop for that while. One warning per outage, one line when it ends."""

    def __init__(
        self, shared: RateLimiter, local: RateLimiter, *, timeout: float, retry_interval: float
    ) -> None:
        self._shared = shared
        self._local = local
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._retry_shared_at = 0.0  # monotonic; Redis is asked again from then on
        self._in_outage = False

    async def hit(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> bool:
        return await self._run(lambda limiter: limiter.hit(item, *identifiers))

    async def window_stats(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> WindowStats:
        return await self._run(lambda limiter: limiter.get_window_stats(item, *identifiers))

    async def probe(self) -> None:
        """Ask Redis once, so an outage at start is logged at start."""
        healthy = False
        with suppress(TimeoutError):
            healthy = await asyncio.wait_for(self._shared.storage.check(), self._timeout)
        if healthy:
            self._recovered()
        else:
            self._outage("no answer to a health check")

    async def _run(self, op: Callable[[RateLimiter], Awaitable[T]]) -> T:
        if time.monotonic() >= self._retry_shared_at:
            try:
                result = await asyncio.wait_for(op(self._shared), self._timeout)
            except (StorageError, TimeoutError, OSError) as exc:
                self._outage(f"{type(exc.__cause__ or exc).__name__}: {exc}")
            else:
                self._recovered()
                return result
        return await op(self._local)

    def _outage(self, reason: str) -> None:
        # Between retries every call goes local at once instead of paying a
        # failed connection attempt each time.
        self._retry_shared_at = time.monotonic() + self._retry_interval
        if not self._in_outage:
            self._in_outage = True
            log.warning("Redis unreachable (%s): Telegram limits are paced by this process alone until it is back", reason)

    def _recovered(self) -> None:
        if self._in_outage:
            self._in_outage = False
            log.info("Redis is back: Telegram limits are shared by every process again")


class SharedRateLimiter(BaseRateLimiter[int]):
    """PTB rate limiter: before each call that sends to a chat, wait until the
    overall and that chat's windows (shared through ``storage_url``) allow
    it; on Telegram's RetryAfter, hold this process's sends that long and
    retry, up to ``max_retries`` times (``rate_limit_args`` overrides it per
    call, as with AIORateLimiter)."""

    def __init__(
        self,
        storage_url: str,
        *,
        key_prefix: str,
        limits: FloodLimits = FloodLimits(),
        max_retries: int = 3,
        storage_timeout: float = 1.0,
        retry_storage_after: float = 5.0,
    ) -> None:
        self._shared_storage: Storage = storage_from_string(
            storage_url,
            key_prefix=key_prefix,
            wrap_exceptions=True,
            connect_timeout=storage_timeout,
            stream_timeout=storage_timeout,
        )
        self._local_storage = MemoryStorage()
        self._windows = FailoverLimiter(
            MovingWindowRateLimiter(self._shared_storage),
            MovingWindowRateLimiter(self._local_storage),
            timeout=storage_timeout,
            retry_interval=retry_storage_after,
        )
        self._overall = parse(limits.overall)
        self._private = parse(limits.private_chat)
        self._group = parse(limits.group)
        self._paid = parse(limits.paid_broadcast)
        self._max_retries = max_retries
        # One contender per process for the overall window: the others queue
        # here in order (asyncio.Lock is FIFO) instead of all waking at each
        # opening and racing through Redis.
        self._overall_turn = asyncio.Lock()
        self._resume_at = 0.0  # monotonic end of a RetryAfter pause

    async def initialize(self) -> None:
        await self._windows.probe()

    async def shutdown(self) -> None:
        # Cancels the memory storage's expiry task; the shared windows expire in Redis.
        await self._local_storage.reset()

    async def process_request(
        self,
        callback: Callback,
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> JSONResult:
        chat = limited_chat(endpoint, data)
        if chat is None:
            return await callback(*args, **kwargs)
        max_retries = self._max_retries if rate_limit_args is None else rate_limit_args
        paid = bool(data.get("allow_paid_broadcast"))
        attempt = 0
        while True:
            await self._wait_for_pause()
            await self._acquire(chat, paid)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt >= max_retries:
                    log.warning("%s: flood control still on after %d retries", endpoint, max_retries)
                    raise
                attempt += 1
                wait = retry_after_seconds(exc)
                log.info("%s: flood control, retrying in %.1f s", endpoint, wait)
                self._pause(wait + 0.1)

    async def _acquire(self, chat: int | str, paid: bool) -> None:
        overall: Limit = (self._paid, ("paid",)) if paid else (self._overall, ("overall",))
        per_chat: Limit = (self._group if is_group(chat) else self._private, ("chat", str(chat)))
        while True:
            await self._wait_for_room(per_chat)
            async with self._overall_turn:
                await self._take(overall)
                # The chat's slot last: a slot taken early would be stamped
                # before the real send, letting the next one in too soon.
                if await self._windows.hit(*per_chat):
                    return
            # Another sender took this chat's slot since we looked: the overall
            # slot goes unused (the safe side) and we wait for the chat again.

    async def _take(self, limit: Limit) -> None:
        while not await self._windows.hit(*limit):
            await self._wait_for_room(limit)

    async def _wait_for_room(self, limit: Limit) -> None:
        """Sleep until the window has room (its oldest entry expires); no hit."""
        while (stats := await self._windows.window_stats(*limit)).remaining <= 0:
            await asyncio.sleep(max(stats.reset_time - time.time(), _MIN_WAIT))

    def _pause(self, seconds: float) -> None:
        # Like AIORateLimiter: a 429 holds every send of this process, since
        # it cannot tell a chat's flood from the bot's.
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    async def _wait_for_pause(self) -> None:
        while (left := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(left)


# ------------------------------------------------------------------ building


def limits_storage_url(redis_url: str) -> str:
    """REDIS_URL (redis://, rediss://, unix://) as the `limits` async storage URL."""
    if redis_url.startswith("async+"):
        return redis_url
    if redis_url.startswith("unix://"):
        return "async+redis+" + redis_url
    return "async+" + redis_url


def telegram_rate_limiter(
    redis_url: str | None, *, redis_prefix: str, token: str, limits: FloodLimits = FloodLimits()
) -> BaseRateLimiter[int]:
    """The Application's rate limiter: shared through Redis when REDIS_URL is
    set (scaled mode), else PTB's in-process one as a single process uses it."""
    if not redis_url:
        # No overall cap for replies (that would serialize busy moments to
        # 30/s); per-group limits and RetryAfter are honored. Bulk sends
        # (broadcasts) pace themselves.
        return AIORateLimiter(overall_max_rate=0, group_max_rate=20, group_time_period=60, max_retries=3)
    # Keys per bot (its public id, never the token's secret part): bots that
    # share one Redis have separate limits at Telegram too.
    bot_id = token.partition(":")[0]
    return SharedRateLimiter(
        limits_storage_url(redis_url), key_prefix=f"{redis_prefix}:telegram:{bot_id}", limits=limits
    )
