"""Tool events reach the database off the hot path, through a BatchWriter."""

from __future__ import annotations

from bot.runtime.events import BatchWriter
from bot.storage.tool_events import ToolEventRecord, ToolEventRepository
from bot.runtime.tasks import TaskTracker


class ToolEventRecorder(BatchWriter[ToolEventRecord]):
    def __init__(
        self,
        repository: ToolEventRepository,
        tasks: TaskTracker,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        max_pending: int = 20_000,
    ) -> None:
        self.repository = repository  # for readers (/stats)
        super().__init__(
            repository.add_many,
            tasks,
            name="tool events",
            flush_interval=flush_interval,
            batch_size=batch_size,
            max_pending=max_pending,
        )
