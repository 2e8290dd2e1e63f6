"""Update processing: chats in parallel, each chat in order, and long pastes
that Telegram split into several messages merged back into one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

# PTB's own semaphore would be taken before our per-chat lock, letting one busy
# chat occupy every slot; we bound concurrency ourselves, after the chat lock.
_UNBOUNDED = 1_000_000


def chat_key(update: object) -> int | None:
    if isinstance(update, Update) and update.effective_chat is not None:
        return update.effective_chat.id
    return None


@dataclass
class _Paste:
    head_message_id: int
    head_update_id: int
    parts: list[str]
    last_part_at: float
    grew: asyncio.Event = field(default_factory=asyncio.Event)


class PasteMerger:
    """Telegram clients split a text over 4096 characters into consecutive
    messages. A message close to the limit opens a paste; further plain texts
    from the same user in the same chat that arrive within ``window`` seconds
    of the previous part are absorbed into it, and the head message's handler
    receives the joined text."""

    def __init__(self, window: float, threshold: int = 3500) -> None:
        self._window = window
        self._threshold = threshold
        self._open: dict[tuple[int, int], _Paste] = {}
        # Update ids of absorbed parts, by their head's update id: the parts
        # are done when the head's turn is (see ChatOrderedProcessor's on_done).
        self._absorbed: dict[int, list[int]] = {}

    @staticmethod
    def _plain_text(update: object) -> tuple[tuple[int, int], int, str] | None:
        if not isinstance(update, Update) or update.message is None:
            return None
        message = update.message
        if not message.text or message.text.startswith("/") or message.from_user is None:
            return None
        return (message.chat.id, message.from_user.id), message.message_id, message.text

    def offer(self, update: object) -> bool:
        """Called in arrival order, before any waiting. True means the update
        was absorbed into an open paste and must not be handled on its own."""
        found = self._plain_text(update)
        if found is None or self._window <= 0:
            return False
        key, message_id, text = found
        paste = self._open.get(key)
        now = time.monotonic()
        if paste is not None and now - paste.last_part_at <= self._window:
            paste.parts.append(text)
            paste.last_part_at = now
            paste.grew.set()
            assert isinstance(update, Update)
            self._absorbed.setdefault(paste.head_update_id, []).append(update.update_id)
            return True
        if len(text) >= self._threshold:
            assert isinstance(update, Update)
            self._open[key] = _Paste(message_id, update.update_id, [text], now)
        return False

    def parts_of(self, head_update_id: int) -> list[int]:
        """The update ids absorbed into the paste this update headed (forgotten now)."""
        return self._absorbed.pop(head_update_id, [])

    async def collect(self, chat_id: int, user_id: int, message_id: int, text: str) -> str:
        """The full text for the message ``message_id``: itself, or the whole
        paste it heads once no part has arrived for ``window`` seconds."""
        key = (chat_id, user_id)
        paste = self._open.get(key)
        if paste is None or paste.head_message_id != message_id:
            return text
        while True:
            remaining = paste.last_part_at + self._window - time.monotonic()
            if remaining <= 0:
                break
            paste.grew.clear()
            try:
                await asyncio.wait_for(paste.grew.wait(), remaining)
            except TimeoutError:
                pass
        del self._open[key]
        return "\n".join(paste.parts)


class ChatOrderedProcessor(BaseUpdateProcessor):
    """Different chats run concurrently (up to ``max_concurrent``); updates of
    one chat run one at a time, in arrival order (asyncio.Lock is FIFO).
    ``on_done`` hears of every update whose handlers returned, with the ids
    it covers (its own, and those of the paste parts it headed), e.g. the
    inbox (inbox.py)."""

    def __init__(
        self,
        max_concurrent: int,
        merger: PasteMerger,
        on_done: Callable[[Update, list[int]], None] | None = None,
    ) -> None:
        super().__init__(_UNBOUNDED)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}
        self.merger = merger
        self.on_done = on_done

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if self.merger.offer(update):
            close = getattr(coroutine, "close", None)
            if close is not None:
                close()  # the absorbed part's handler never runs
            return
        # Done also when it raised (no update is handled at every start
        # forever); not when cancelled (a stop that ran out of time): that
        # turn is not finished, and the next start takes it up.
        try:
            await self._in_order(update, coroutine)
        except Exception:
            self._done(update)
            raise
        self._done(update)

    def _done(self, update: object) -> None:
        if self.on_done is not None and isinstance(update, Update):
            self.on_done(update, [update.update_id, *self.merger.parts_of(update.update_id)])

    async def _in_order(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = chat_key(update)
        if key is None:
            async with self._slots:
                await coroutine
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock, self._slots:
                await coroutine
        finally:
            self._waiting[key] -= 1
            if self._waiting[key] == 0:
                # Forget idle chats so the dict does not grow with every chat ever seen.
                del self._waiting[key]
                del self._locks[key]

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
