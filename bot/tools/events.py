"""Tool events reach the database off the hot path: ``record`` only appends to
a buffer; a tracked background task writes the buffer in batches shortly
after, and ``flush`` at shutdown writes what is left."""

from __future__ import annotations

import asyncio
import logging

from bot.errors import StorageError
from bot.storage.tool_events import ToolEventRecord, ToolEventRepository
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)


class ToolEventRecorder:
    def __init__(
        self,
        repository: ToolEventRepository,
        tasks: TaskTracker,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        max_pending: int = 20_000,
    ) -> None:
        self._repository = repository
        self._tasks = tasks
        self._interval = flush_interval
        self._batch_size = batch_size
        self._max_pending = max_pending  # bounds memory if the database is down for long
        self._pending: list[ToolEventRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def record(self, event: ToolEventRecord) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(event)
        if self._flusher is None:
            try:
                self._flusher = self._tasks.spawn(self._flush_soon(), "tool-events-flush")
            except RuntimeError:
                pass  # shutting down: the final flush() writes it

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(self._interval)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            try:
                await self._repository.add_many(batch)
            except StorageError as exc:
                # Statistics are not worth retrying forever or failing a turn over.
                self.dropped += len(batch)
                log.warning("could not record %d tool events: %s", len(batch), exc)
                continue
            self.written += len(batch)
