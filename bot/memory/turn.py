"""What a chat turn asks of long-term memory: recall before the model call,
extraction after the reply. Both are extras: neither may delay or break a
reply, so every failure here ends in a log line.

Memory is personal: it is recalled and written in private chats only, so
nothing the user told the bot in private surfaces in a group."""

from __future__ import annotations

import logging

from bot.context import RequestContext
from bot.memory.extraction import MemoryWriter, Turn
from bot.memory.records import Hit
from bot.memory.service import MemoryService
from bot.storage.repositories import StoredMessage
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)

# Earlier messages given to extraction for context ("yes, that one" needs the question).
CONTEXT_MESSAGES = 2


def memory_lines(hits: list[Hit]) -> str:
    lines = []
    for hit in hits:
        note = f" (noted {hit.memory.created_at:%Y-%m-%d})" if hit.memory.kind == "ephemeral" else ""
        lines.append(f"- {hit.memory.text}{note}")
    return "\n".join(lines)


class TurnMemory:
    def __init__(
        self, memory: MemoryService, writer: MemoryWriter, tasks: TaskTracker, *, extraction: bool = True
    ) -> None:
        self._memory = memory
        self._writer = writer
        self._tasks = tasks
        self._extraction = extraction

    async def recall(self, ctx: RequestContext, text: str) -> list[Hit]:
        if not ctx.is_private:
            return []
        try:
            return await self._memory.recall(ctx.user_id, text)
        except Exception:  # an extra: the turn goes on without memories
            log.exception("memory recall failed; answering without memories")
            return []

    def after_turn(
        self,
        ctx: RequestContext,
        user_text: str,
        answer: str,
        user_message_id: int,
        earlier: list[StoredMessage],
    ) -> None:
        """Start extraction in the background; returns at once."""
        if not (self._extraction and ctx.is_private and self._writer.worth_extracting(user_text)):
            return
        turns = [Turn(m.role, m.content) for m in earlier[-CONTEXT_MESSAGES:]]
        turns += [Turn("user", user_text), Turn("assistant", answer)]
        try:
            self._tasks.spawn(
                self._writer.write(ctx.user_id, ctx.user_name, turns, user_message_id), "memory-extract"
            )
        except RuntimeError:  # shutting down: this turn's facts are skipped
            log.info("shutting down; memory extraction skipped")
