"""The memory tools the model can call: remember, recall, forget.

Plain typed async functions taking the RequestContext first, as the tool
registry expects; the docstrings are written for the model. Authorization
comes from the context only: the user id is never an argument, so the model
cannot name another user. Memory is personal, so the tools work in private
chats only. Every outcome, including bad input, is a short sentence the
model can relay; nothing raises.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.context import RequestContext
from bot.errors import AriumError
from bot.memory import keyword
from bot.memory.records import EXPLICIT_IMPORTANCE, MAX_MEMORY_CHARS, Hit, NewMemory, clean_text
from bot.memory.service import MemoryService

log = logging.getLogger(__name__)

RECALL_LIMIT = 5
FORGET_LIMIT = 3
# forget() deletes only clear matches: a shared content word, or this close in meaning.
FORGET_SIMILARITY = 0.55
TOOL_WAIT = 2.0
PRIVATE_ONLY = "Memory is only available in a private chat with the user; nothing was done."

Tool = Callable[..., Awaitable[str]]


def clear_matches(hits: list[Hit]) -> list[Hit]:
    """Hits clear enough to delete on a "forget": a shared content word, or close in meaning."""
    return [hit for hit in hits if hit.keyword_rank is not None or (hit.similarity or 0.0) >= FORGET_SIMILARITY]


class MemoryTools:
    def __init__(self, memory: MemoryService) -> None:
        self._memory = memory

    def functions(self) -> list[Tool]:
        """The tools, for registration with the tool registry."""
        return [self.remember, self.recall, self.forget]

    async def remember(self, ctx: RequestContext, fact: str) -> str:
        """Save a fact about the user to long-term memory. Use it when the user
        asks you to remember something, or tells you something lasting about
        themselves (name, family, work, preferences, how you should answer).

        Args:
            fact: One short, self-contained statement about the user, in their
                language, e.g. "Prefers metric units" or "Daughter Lisa was born in 2019".
        """
        if not ctx.is_private:
            return PRIVATE_ONLY
        text = " ".join(str(fact or "").split())
        if not text:
            return "Nothing was saved: the fact is empty."
        if len(text) > MAX_MEMORY_CHARS:
            return (
                f"Nothing was saved: the fact is {len(text)} characters long, over the limit of "
                f"{MAX_MEMORY_CHARS}. Save it as several short facts."
            )
        # Idempotent by the call's key, checked first: the same call re-run
        # after a crash (its row stored, its round not yet kept) answers as
        # the first run did. The dedup below only ever skips an insert, never
        # changes a row, so the key is only about not inserting twice; the
        # UNIQUE index on the key stops a second row even if this check raced.
        try:
            if ctx.tool_call_key is not None and await self._memory.made_by(ctx.user_id, ctx.tool_call_key):
                return f"Remembered: {text}"
            known = await self._memory.search(ctx.user_id, text, 3, wait=TOOL_WAIT)
            if any(keyword.words(hit.memory.text) == keyword.words(text) for hit in known):
                return f"Already remembered: {text}"
            fact = NewMemory(
                clean_text(text), "fact", EXPLICIT_IMPORTANCE, "explicit", idempotency_key=ctx.tool_call_key
            )
            await self._memory.add(ctx.user_id, [fact])
        except AriumError as exc:
            log.warning("remember failed: %s", exc)
            return "Nothing was saved: memory is unavailable right now. Try again later."
        return f"Remembered: {text}"

    async def recall(self, ctx: RequestContext, query: str) -> str:
        """Search long-term memory for what the user told you before. Use it when
        the answer may depend on something personal that is not in the
        conversation (e.g. "what was my daughter's name?").

        Args:
            query: What to look for, in a few words, e.g. "daughter's name".
        """
        if not ctx.is_private:
            return PRIVATE_ONLY
        query = " ".join(str(query or "").split())
        if not query:
            return "Say what to look for: the query is empty."
        try:
            hits = await self._memory.search(ctx.user_id, query, RECALL_LIMIT, wait=TOOL_WAIT)
        except AriumError as exc:
            log.warning("recall failed: %s", exc)
            return "Memory is unavailable right now."
        if not hits:
            return "Nothing remembered matches that."
        lines = [f"- {hit.memory.text} (remembered {hit.memory.created_at:%Y-%m-%d})" for hit in hits]
        return "Remembered about the user:\n" + "\n".join(lines)

    async def forget(self, ctx: RequestContext, query: str) -> str:
        """Delete memories matching the query. Use it only when the user asks you
        to forget something. At most three clear matches are deleted; tell the
        user what was forgotten. (The user can also review and delete
        memories themselves with /memory and /forget.)

        Args:
            query: What to forget, as specific as possible, e.g. "old address in Berlin".
        """
        if not ctx.is_private:
            return PRIVATE_ONLY
        query = " ".join(str(query or "").split())
        if not query:
            return "Nothing was forgotten: say what to forget."
        # No key here: a deletion leaves no row to carry one. Re-run after a
        # crash, forget finds what the first run deleted gone and deletes
        # nothing of it again; only past FORGET_LIMIT clear matches would it
        # take up to three more of what the user asked to forget (and say so).
        try:
            hits = await self._memory.search(ctx.user_id, query, RECALL_LIMIT, wait=TOOL_WAIT)
            clear = clear_matches(hits)[:FORGET_LIMIT]
            deleted = set(await self._memory.delete(ctx.user_id, [hit.memory.id for hit in clear]))
        except AriumError as exc:
            log.warning("forget failed: %s", exc)
            return "Nothing was forgotten: memory is unavailable right now."
        gone = [hit.memory.text for hit in clear if hit.memory.id in deleted]
        if not gone:
            return "Nothing remembered matches that, so nothing was forgotten."
        return "Forgotten:\n" + "\n".join(f"- {text}" for text in gone)
