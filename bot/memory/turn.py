"""What a chat turn asks of long-term memory: recall before the model call,
extraction after the reply. Both are extras: neither may delay or break a
reply, so every failure here ends in a log line.

Memory is personal: it is recalled and written in private chats only, so
nothing the user told the bot in private surfaces in a group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.context import RequestContext
from bot.memory.extraction import MAX_EXCHANGE_CHARS, MemoryWriter, Turn
from bot.memory.records import Hit
from bot.memory.service import MemoryService
from bot.storage.repositories import ExtractionBacklog, StoredMessage
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)

# Earlier messages given to extraction for context ("yes, that one" needs the question).
CONTEXT_MESSAGES = 2
# Exchanges (a user message and the answer) one extraction reads at most.
MAX_BATCH_EXCHANGES = 8
# How far back a start looks for exchanges extraction never read (a crash).
EXTRACTION_LOOKBACK = timedelta(days=1)


def memory_lines(hits: list[Hit]) -> str:
    lines = []
    for hit in hits:
        note = f" (noted {hit.memory.created_at:%Y-%m-%d})" if hit.memory.kind == "ephemeral" else ""
        lines.append(f"- {hit.memory.text}{note}")
    return "\n".join(lines)


@dataclass
class _Batch:
    """A user's exchanges waiting for a quiet spell before extraction."""

    user_name: str
    turns: list[Turn]
    source_message_id: int
    deletions: int  # the user's deletion count when the batch began
    exchanges: int = 0
    timer: asyncio.TimerHandle | None = None

    @property
    def chars(self) -> int:
        return sum(len(turn.text) for turn in self.turns)


class TurnMemory:
    """``quiet``: seconds without a new private turn before the turns since
    the last extraction are read, in one model call instead of one per turn
    (0: after every turn). A batch also goes at ``max_exchanges`` exchanges,
    or before it would outgrow what one extraction prompt reads, and at
    shutdown (``flush_all``)."""

    def __init__(
        self,
        memory: MemoryService,
        writer: MemoryWriter,
        tasks: TaskTracker,
        *,
        extraction: bool = True,
        quiet: float = 0.0,
        max_exchanges: int = MAX_BATCH_EXCHANGES,
        read_until: Callable[[int, int | None], Awaitable[None]] | None = None,
    ) -> None:
        """``read_until(user, message id)``: records how far extraction has
        read a user's messages, so a crash loses nothing (``recover``)."""
        self._read_until = read_until
        self._memory = memory
        self._writer = writer
        self._tasks = tasks
        self._extraction = extraction
        self._quiet = quiet
        self._max_exchanges = max_exchanges
        self._batches: dict[int, _Batch] = {}

    async def recall(self, ctx: RequestContext, text: str) -> list[Hit]:
        # A user met just now has nothing to recall: no query or index load
        # for the first message of each of a crowd of new users.
        if not ctx.is_private or ctx.first_contact:
            return []
        try:
            return await self._memory.recall(ctx.user_id, text)
        except Exception:  # an extra: the turn goes on without memories
            log.exception("memory recall failed; answering without memories")
            return []

    def prefetch(self, user_id: int, text: str) -> None:
        """A private message's recall is coming: its query embedding may start now."""
        try:
            self._memory.prefetch(user_id, text)
        except Exception:  # an extra: recall embeds the query itself
            log.exception("could not start the query embedding early")

    def after_turn(
        self,
        ctx: RequestContext,
        user_text: str,
        answer: str,
        user_message_id: int,
        earlier: list[StoredMessage],
    ) -> None:
        """Start extraction in the background, now or after a quiet spell;
        returns at once."""
        if not (self._extraction and ctx.is_private):
            return
        worth = self._writer.worth_extracting(user_text)
        exchange = [Turn("user", user_text), Turn("assistant", answer)]
        context = [Turn(m.role, m.content) for m in earlier[-CONTEXT_MESSAGES:]]
        waiting = self._batches.get(ctx.user_id)
        if waiting is not None and waiting.chars + len(user_text) + len(answer) > MAX_EXCHANGE_CHARS:
            # One prompt would cut the oldest turns: what waits goes first.
            self._flush(ctx.user_id)
            waiting = None
        # Small talk starts nothing, but inside a waiting batch it is context.
        if waiting is None and not worth:
            return
        if self._quiet <= 0:
            self._start(ctx.user_id, ctx.user_name, context + exchange, user_message_id)
            return
        batch = waiting or self._begin(ctx, context, user_message_id)
        batch.turns += exchange
        batch.exchanges += 1
        batch.source_message_id = user_message_id
        batch.user_name = ctx.user_name
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.exchanges >= self._max_exchanges:
            self._flush(ctx.user_id)
        else:
            batch.timer = asyncio.get_running_loop().call_later(self._quiet, self._flush, ctx.user_id)

    def flush_all(self) -> None:
        """Start every waiting batch now (at shutdown, before the task drain)."""
        for user_id in list(self._batches):
            self._flush(user_id)

    async def extract_now(self, user_id: int) -> None:
        """Extract what waits for ``user_id`` and return when it is stored
        (the evaluation harness, before a task's next conversation)."""
        batch = self._batches.pop(user_id, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        if self._memory.user_deletions(user_id) == batch.deletions:
            await self._extract(user_id, batch.user_name, batch.turns, batch.source_message_id)

    @property
    def waiting(self) -> int:
        """Users with exchanges waiting for extraction."""
        return len(self._batches)

    def _begin(self, ctx: RequestContext, context: list[Turn], user_message_id: int) -> _Batch:
        batch = _Batch(ctx.user_name, list(context), user_message_id, self._memory.user_deletions(ctx.user_id))
        self._batches[ctx.user_id] = batch
        return batch

    def _flush(self, user_id: int) -> None:
        batch = self._batches.pop(user_id, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        if self._memory.user_deletions(user_id) != batch.deletions:
            # The user deleted memories since these turns: what they said
            # before must not come back as new memories.
            log.info("user %s deleted memories; %d waiting exchanges not extracted", user_id, batch.exchanges)
            return
        self._start(user_id, batch.user_name, batch.turns, batch.source_message_id)

    def recover(self, backlog: list[ExtractionBacklog]) -> int:
        """Extraction of what a crash left unread (exchanges after each
        user's extraction cursor), in the background; returns how many users."""
        started = 0
        for entry in backlog:
            turns: list[Turn] = []
            worth = False
            for _, question, answer in reversed(entry.exchanges):  # newest first, as many as one prompt reads
                if sum(len(turn.text) for turn in turns) + len(question) + len(answer) > MAX_EXCHANGE_CHARS:
                    break
                turns[:0] = [Turn("user", question), Turn("assistant", answer)]
                worth = worth or self._writer.worth_extracting(question)
            last = entry.exchanges[-1][0]
            if worth:
                self._start(entry.user_id, entry.user_name, turns, last)
                started += 1
            elif self._read_until is not None:  # small talk: nothing to read there
                self._spawn(self._read_until(entry.user_id, last), "memory-cursor")
        return started

    def _start(self, user_id: int, user_name: str, turns: list[Turn], source_message_id: int) -> None:
        self._spawn(self._extract(user_id, user_name, turns, source_message_id), "memory-extract")

    async def _extract(self, user_id: int, user_name: str, turns: list[Turn], source_message_id: int) -> None:
        report = await self._writer.write(user_id, user_name, turns, source_message_id)
        # A skipped extraction (the model failed) is tried again after a restart.
        if report.skipped is None and self._read_until is not None:
            await self._read_until(user_id, source_message_id)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            self._tasks.spawn(work, name)
        except RuntimeError:  # shutting down: the cursor stays, and the next start reads these turns
            work.close()
            log.info("shutting down; memory extraction left for the next start")
