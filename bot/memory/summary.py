"""The running summary of a long conversation (anchor: Letta's recursive
summary). When a conversation's unsummarized messages outgrow the history
budget, the older ones are folded into ``conversations.summary`` and the
history sent to the model starts after them, so older context is condensed
instead of silently cut off.

Folding normally runs after a turn, in the background, once the messages
after the summary pass ``trigger`` of the budget; it keeps the newest
``keep`` of the budget verbatim. If a turn finds messages already falling
out of its window (a burst, or an earlier fold failed), it folds first,
bounded in time, and goes ahead without the fold if that fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass

from bot.errors import AriumError, ModelError
from bot.llm.service import ModelService
from bot.llm.types import ChatMessage, ChatRequest
from bot.prompts import PromptRegistry
from bot.storage.repositories import MessageRepository, StoredMessage
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryConfig:
    history_tokens: int
    trigger: float = 0.75  # fold in the background past this share of the budget
    keep: float = 0.5  # share of the budget kept verbatim after a fold
    max_fold_tokens: int = 8_000  # what one summary call reads at most
    max_message_chars: int = 3_000  # a single huge paste is shortened in the summary prompt
    max_summary_chars: int = 3_000
    wait: float = 20.0  # what a turn waits for a fold it needs
    scan_rows: int = 400
    # After the model fails a summary, that conversation waits this long
    # (doubling up to the cap) before the next try, so turns do not each pay
    # a failing call and background calls do not trip the endpoint's breaker.
    retry_after: float = 60.0
    retry_cap: float = 1800.0


class HistorySummarizer:
    def __init__(
        self,
        messages: MessageRepository,
        models: ModelService,
        prompts: PromptRegistry,
        tasks: TaskTracker,
        config: SummaryConfig,
    ) -> None:
        self._messages = messages
        self._models = models
        self._prompts = prompts
        self._tasks = tasks
        self.config = config
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._backoff: dict[int, tuple[float, float]] = {}  # conversation -> (retry at, last delay)

    def after_turn(self, conversation_id: int, unsummarized_tokens: int) -> None:
        """Fold in the background once the unsummarized part nears the budget.
        Not while a fold of the conversation runs or waits: a second one queued
        behind it would only repeat its work, and the next turn asks again."""
        if unsummarized_tokens > self.config.trigger * self.config.history_tokens and not self._busy(conversation_id):
            try:
                self._tasks.spawn(self.fold(conversation_id), f"summary:{conversation_id}")
            except RuntimeError:  # shutting down; the next start folds it
                pass

    async def fold_now(self, conversation_id: int) -> bool:
        """Fold before a turn that would otherwise lose messages; bounded wait."""
        try:
            task = self._tasks.spawn(self.fold(conversation_id), f"summary:{conversation_id}")
        except RuntimeError:  # shutting down
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.config.wait)
        except TimeoutError:
            log.warning("history summary took longer than %.0f s; answering without it", self.config.wait)
            return False

    def _busy(self, conversation_id: int) -> bool:
        lock = self._locks.get(conversation_id)
        return lock is not None and lock.locked()

    async def fold(self, conversation_id: int) -> bool:
        """Fold older messages into the summary; True if the summary moved on.
        One fold per conversation at a time; a fold that waited for another
        one that failed gives up too (the back-off is read under the lock)."""
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        async with lock:
            retry_at, delay = self._backoff.get(conversation_id, (0.0, 0.0))
            if time.monotonic() < retry_at:
                return False
            try:
                folded = await self._fold(conversation_id)
            except ModelError as exc:
                delay = min(self.config.retry_cap, delay * 2 or self.config.retry_after)
                self._backoff[conversation_id] = (time.monotonic() + delay, delay)
                log.warning("history summary failed (%s); next try in %.0f s", exc.__class__.__name__, delay)
                return False
            except AriumError as exc:
                log.warning("history summary failed, will retry at a later turn: %s: %s", exc.__class__.__name__, exc)
                return False
            self._backoff.pop(conversation_id, None)
            return folded

    async def _fold(self, conversation_id: int) -> bool:
        summary, until_id = await self._messages.summary_state(conversation_id)
        pending = await self._messages.unsummarized(conversation_id, until_id, self.config.scan_rows)
        keep = _newest_within(pending, int(self.config.keep * self.config.history_tokens), at_least=1)
        older = pending[: len(pending) - len(keep)]
        if not older:
            return False
        chunk = _newest_within(older, self.config.max_fold_tokens, at_least=1)
        if len(chunk) < len(older):
            # Only after an upgrade or a long outage: what is older than one
            # fold's worth stays out of the summary rather than stall the turn.
            log.info("history summary skips %d old messages of conversation %s", len(older) - len(chunk), conversation_id)
        new_summary = await self._summarize(summary, chunk)
        if not new_summary:
            return False
        return await self._messages.save_summary(conversation_id, new_summary, older[-1].id, until_id)

    async def _summarize(self, previous: str | None, messages: list[StoredMessage]) -> str:
        limit = self.config.max_message_chars
        lines = [
            f"{'Assistant' if m.role == 'assistant' else 'User'}: "
            f"{m.content if len(m.content) <= limit else m.content[:limit] + ' […]'}"
            for m in messages
        ]
        prompt, _ = self._prompts.render(
            "history_summary", {"previous_summary": previous or "(none yet)", "messages": "\n\n".join(lines)}
        )
        completion = await self._models.complete(
            ChatRequest(messages=(ChatMessage("user", prompt),), max_tokens=800, temperature=0.0)
        )
        text = completion.text.strip()
        return text[: self.config.max_summary_chars]


def _newest_within(messages: list[StoredMessage], budget: int, *, at_least: int) -> list[StoredMessage]:
    """The newest suffix of ``messages`` within ``budget`` tokens (at least ``at_least``)."""
    picked = 0
    used = 0
    for message in reversed(messages):
        if picked >= at_least and used + message.tokens > budget:
            break
        used += message.tokens
        picked += 1
    return messages[len(messages) - picked :]
