"""Tracked background tasks: nothing runs unowned, every failure reaches one
error handler, and shutdown waits for the work in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
ErrorHandler = Callable[[BaseException, str], None]


def _log_error(exc: BaseException, name: str) -> None:
    log.error("background task %s failed", name, exc_info=exc)


class TaskTracker:
    def __init__(self, on_error: ErrorHandler = _log_error) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        if self._closing:
            coro.close()
            raise RuntimeError(f"shutting down; refused to start {name}")
        # The task inherits the current context, so its log lines keep the request id.
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._on_error(exc, task.get_name())

    def report_error(self, exc: BaseException, name: str) -> None:
        """Send a failure from outside a tracked task (scheduler jobs) to the same handler."""
        self._on_error(exc, name)

    @property
    def closing(self) -> bool:
        """Shutdown has begun: long background work should stop at its next step."""
        return self._closing

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Stop accepting work, wait up to ``timeout`` for running tasks, cancel the rest."""
        self._closing = True
        if not self._tasks:
            return
        done, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in still_running:
            log.warning("cancelling %s at shutdown", task.get_name())
            task.cancel()
        if still_running:
            await asyncio.gather(*still_running, return_exceptions=True)

