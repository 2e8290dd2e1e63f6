"""Broker -> core: a worker of the scaled mode takes the updates of the
partitions RabbitMQ gives it and hands each to the Telegram channel, as a
polled update would be handled; the broker's message is acknowledged after
the update's handlers returned, that is after its turn is stored.

Order: RabbitMQ delivers a partition's messages in order, and the callbacks
start in delivery order; each update waits for the previous update of its
chat before it runs, while other chats run at once. Exactly once as the
user sees it: every update is claimed by its id (telegram_updates). A
delivery of an update already done is dropped. A delivery of an update a
worker took but never finished (that worker died: RabbitMQ redelivers its
unacknowledged messages to the next consumer) looks up the turn the first
delivery stored, by the request id derived from the update: a stored turn
still unanswered is finished (with the late note) instead of started again,
an answered one is not answered again, and an update that stored nothing
is handled afresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from bot.conversation import ReplySink
from bot.recovery import TurnRecovery
from bot.runtime.clock import utcnow
from bot.scale.broker import chat_of
from bot.storage.repositories import PENDING, RECOVERING, MessageRepository
from bot.storage.updates import DONE, STARTED, UpdateClaims

log = logging.getLogger(__name__)

CLAIMS_KEPT = timedelta(days=2)


class UpdateTarget(Protocol):
    """The Telegram channel, as the worker sees it."""

    async def feed(self, data: dict[str, Any]) -> None: ...

    def sink_for(self, chat_id: int, chat_type: str, *, shown: Sequence[int] = ()) -> ReplySink | None: ...


@dataclass
class WorkerCounts:
    handled: int = 0
    duplicates: int = 0  # deliveries of updates already done
    resumed: int = 0  # turns a dead worker left unanswered, finished here


class UpdateWorker:
    def __init__(
        self,
        *,
        name: str,
        target: UpdateTarget,
        claims: UpdateClaims,
        messages: MessageRepository,
        recovery: TurnRecovery,
        request_id_of: Callable[[int], str],
    ) -> None:
        self.name = name
        self._target = target
        self._claims = claims
        self._messages = messages
        self._recovery = recovery
        self._request_id_of = request_id_of
        self._tails: dict[int, asyncio.Future[None]] = {}  # per chat: the last update taken
        self.counts = WorkerCounts()

    async def handle(self, update: dict[str, Any], redelivered: bool) -> None:
        """One delivery; called in delivery order (before its first await, it
        queues behind the previous update of the same chat). A repeated
        delivery is recognised by the update's claim, not by ``redelivered``:
        the broker sets that flag for our own requeues too."""
        chat = chat_of(update)
        previous = self._tails.get(chat)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat] = mine
        try:
            if previous is not None:
                await asyncio.wait([previous])  # its outcome is its own: only the order matters here
            await self._once(update)
        finally:
            mine.set_result(None)
            if self._tails.get(chat) is mine:
                del self._tails[chat]

    async def _once(self, update: dict[str, Any]) -> None:
        update_id = update.get("update_id")
        if not isinstance(update_id, int):
            log.error("dropping an update without an update_id")
            return
        earlier = await self._claims.claim(update_id, self.name)
        status, by = earlier if earlier is not None else (None, "")
        if status == DONE:
            self.counts.duplicates += 1
            log.info("update %s was handled already; not again", update_id)
            return
        if status == STARTED:
            if by == self.name:  # our own earlier try failed and the update came back
                log.info("update %s: trying again", update_id)
            else:
                log.warning("update %s was taken by worker %s, which did not finish it", update_id, by)
            if await self._finish_stored_turn(update_id):
                await self._claims.done(update_id)
                return
            await self._claims.retake(update_id, self.name)
        await self._target.feed(update)
        await self._claims.done(update_id)
        self.counts.handled += 1

    async def prune(self, keep: timedelta = CLAIMS_KEPT) -> int:
        """Forget claims older than ``keep``: Telegram redelivers an update
        for a day at most, and the broker's redeliveries come within minutes."""
        return await self._claims.prune(utcnow() - keep)

    async def _finish_stored_turn(self, update_id: int) -> bool:
        """The turn the first delivery stored: finished now if it was left
        unanswered; True when there was one (answered now or before)."""
        found = await self._messages.turn_of_request(self._request_id_of(update_id))
        if found is None:
            return False  # it died before storing the turn, or the update was not a turn: handle it afresh
        status, turn = found
        if status in (PENDING, RECOVERING):
            sink = self._target.sink_for(turn.chat_id, turn.chat_type, shown=turn.preview_message_ids)
            if sink is None:
                return False
            outcome = await self._recovery.finish_one(turn, sink)
            self.counts.resumed += outcome == "answered"
            log.warning("update %s: the turn a dead worker left was finished here (%s)", update_id, outcome)
        return True

