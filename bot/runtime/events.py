"""The internal event bus. Turns, tool calls and admin actions publish small
frozen events; subscribers (the statistics and audit
writers) buffer them and write in batches, so a busy bot does not write the
database once per event.

``publish`` never blocks and never raises: an event is a side note, and a
failing subscriber must not fail the turn that published it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from bot.errors import StorageError
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)
E = TypeVar("E")


@dataclass(frozen=True)
class TurnFinished:
    """A chat turn ended; ``model`` is None when no model answered."""

    user_id: int
    chat_id: int
    model: str | None
    status: str  # complete | partial | failed
    tokens_in: int
    tokens_out: int
    at: datetime = field(default_factory=utcnow)
    seconds: float | None = None  # message in to answer out, when measured


@dataclass(frozen=True)
class AdminAction:
    """An admin command that was run (or refused as malformed)."""

    admin_id: int
    action: str
    arguments: str
    outcome: str
    at: datetime = field(default_factory=utcnow)


Subscriber = Callable[[Any], None]


class EventBus:
    """Dispatches each event to the subscribers of its exact type."""

    def __init__(self) -> None:
        self._subscribers: dict[type, list[Subscriber]] = {}

    def subscribe(self, event_type: type[E], subscriber: Callable[[E], None]) -> None:
        self._subscribers.setdefault(event_type, []).append(subscriber)

    def publish(self, event: object) -> None:
        for subscriber in self._subscribers.get(type(event), ()):
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - see the module docstring
                log.exception("event subscriber failed on %s", type(event).__name__)


class Publisher:
    """The event sink a feature writes to (``record``), handing each event to
    the bus; the feature need not know who listens."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def record(self, event: object) -> None:
        self._bus.publish(event)


class BatchWriter(Generic[E]):
    """Buffers items and writes them with ``write`` in batches: a tracked
    background task flushes shortly after the first item of a batch arrives,
    and ``flush`` at shutdown writes what is left."""

    def __init__(
        self,
        write: Callable[[Sequence[E]], Awaitable[None]],
        tasks: TaskTracker,
        *,
        name: str,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        max_pending: int = 20_000,
    ) -> None:
        self._write = write
        self._tasks = tasks
        self._name = name
        self._interval = flush_interval
        self._batch_size = batch_size
        self._max_pending = max_pending  # bounds memory if the database is down for long
        self._pending: list[E] = []
        self._writing: list[E] = []  # the batch being written: still counted by readers
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> Sequence[E]:
        """Items not yet committed, including the batch being written (readers
        that must see them, such as the daily quota, would otherwise miss a
        batch for the length of its write)."""
        return [*self._writing, *self._pending]

    def record(self, item: E) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(item)
        if self._flusher is None:
            try:
                self._flusher = self._tasks.spawn(self._flush_soon(), f"{self._name}-flush")
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
            self._writing = batch
            try:
                await self._write(batch)
            except StorageError as exc:
                # Statistics are not worth retrying forever or failing a turn over.
                self.dropped += len(batch)
                log.warning("could not write %d %s: %s", len(batch), self._name, exc)
                continue
            finally:
                self._writing = []
            self.written += len(batch)
