"""ToolExecutor: runs tool calls without blocking the event loop, and bounds
what they may cost.

- Sync tools run in a ThreadPoolExecutor. Its own queue is unbounded, so calls
  are admitted through a counter: workers + queue_size calls at most may be
  running or waiting; the next one is answered "busy" at once (backpressure)
  instead of piling up behind a hung tool.
- Async tools are awaited on the loop directly; threads are for blocking code.
- Every call has a deadline (the tool's own timeout or the default). Past it
  the model gets a timeout result and the turn moves on. A thread cannot be
  stopped, so a timed-out sync tool keeps its worker, and its admission slot,
  until it really ends: the bound stays honest.
- One user may have at most ``per_user`` calls in flight; more wait for a slot
  of their own (within the deadline), so one user's burst cannot take every
  worker from everybody else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from bot.errors import ToolError

log = logging.getLogger(__name__)


class ToolStatus(StrEnum):
    OK = "ok"
    ERROR = "error"  # the tool raised
    INVALID = "invalid"  # arguments did not fit the schema
    TIMEOUT = "timeout"
    BUSY = "busy"  # rejected by backpressure or during shutdown
    UNKNOWN = "unknown"  # no such tool for this user (or not allowed: indistinguishable on purpose)


@dataclass(frozen=True)
class ToolOutcome:
    status: ToolStatus
    content: str  # what the model is told
    duration: float = 0.0  # seconds from submission to result

    @property
    def ok(self) -> bool:
        return self.status is ToolStatus.OK


def error_content(kind: str, detail: str) -> str:
    """The JSON text a failed call returns to the model: a kind it can branch
    on and a sentence it can act on."""
    return json.dumps({"error": kind, "detail": detail}, ensure_ascii=False)


def render_result(value: Any) -> str:
    """A tool's return value as the text the model reads."""
    if value is None:
        return "done"
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)


class _UserSlots:
    """At most ``limit`` calls in flight per user; waiters are served in order.
    Lives on the event loop thread only."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used: dict[int, int] = defaultdict(int)
        self._waiters: dict[int, deque[asyncio.Future[None]]] = defaultdict(deque)

    async def acquire(self, user_id: int, timeout: float) -> bool:
        if self._used[user_id] < self._limit and not self._waiters[user_id]:
            self._used[user_id] += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[user_id].append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max(timeout, 0.0))
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # the slot was handed over at the last moment: keep it
            waiter.cancel()
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(user_id)  # handed over, but the caller is gone: pass it on
            else:
                waiter.cancel()
            raise
        finally:
            queue = self._waiters.get(user_id)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
            if queue is not None and not queue:
                del self._waiters[user_id]

    def release(self, user_id: int) -> None:
        queue = self._waiters.get(user_id)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter; the count stays
                return
        self._used[user_id] -= 1
        if self._used[user_id] <= 0:
            del self._used[user_id]

    def in_flight(self, user_id: int) -> int:
        return self._used.get(user_id, 0)


class ToolExecutor:
    def __init__(self, *, workers: int, queue_size: int, timeout: float, per_user: int) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.default_timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tool")
        self._slots = _UserSlots(per_user)
        self._lock = threading.Lock()
        self._admitted = 0  # sync calls running or queued in the pool
        self._running: dict[concurrent.futures.Future[Any], str] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    async def run(
        self,
        name: str,
        user_id: int,
        invoke: Callable[[], Any],
        *,
        is_async: bool,
        timeout: float | None = None,
    ) -> ToolOutcome:
        """Run one call; never raises (except cancellation of the caller)."""
        started = time.monotonic()
        limit = timeout or self.default_timeout
        self._loop = asyncio.get_running_loop()
        if self._closed:
            return _outcome(ToolStatus.BUSY, "the assistant is shutting down; try again later", started)
        if not await self._slots.acquire(user_id, limit):
            return _outcome(
                ToolStatus.BUSY, "too many of this user's tool calls are still running; try again shortly", started
            )
        remaining = limit - (time.monotonic() - started)
        if is_async:
            try:
                return await self._run_async(name, invoke, remaining, limit, started)
            finally:
                self._slots.release(user_id)
        return await self._run_sync(name, user_id, invoke, remaining, limit, started)

    async def _run_async(
        self, name: str, invoke: Callable[[], Any], remaining: float, limit: float, started: float
    ) -> ToolOutcome:
        try:
            value = await asyncio.wait_for(_awaitable(invoke), max(remaining, 0.0))
        except TimeoutError:
            log.warning("tool %s timed out after %.1f s", name, limit)
            return _outcome(ToolStatus.TIMEOUT, f"the tool did not answer within {limit:g} s", started)
        except Exception as exc:
            return _failure(name, exc, started)
        return _outcome(ToolStatus.OK, render_result(value), started)

    async def _run_sync(
        self, name: str, user_id: int, invoke: Callable[[], Any], remaining: float, limit: float, started: float
    ) -> ToolOutcome:
        future = self._admit(name, user_id, invoke)
        if future is None:
            self._slots.release(user_id)
            return _outcome(ToolStatus.BUSY, "the assistant is busy; try again in a moment", started)
        waiter = asyncio.wrap_future(future)
        # The wrapper outlives a timeout; retrieve its outcome so a late
        # exception is not reported as "never retrieved".
        waiter.add_done_callback(_consume)
        done, _ = await asyncio.wait({waiter}, timeout=max(remaining, 0.0))
        if not done:
            future.cancel()  # succeeds only while still queued: then it never runs
            log.warning("tool %s timed out after %.1f s; its thread is left to finish", name, limit)
            return _outcome(ToolStatus.TIMEOUT, f"the tool did not answer within {limit:g} s", started)
        if waiter.cancelled():  # dropped from the queue by shutdown before it ran
            return _outcome(ToolStatus.BUSY, "the assistant is shutting down; try again later", started)
        try:
            value = waiter.result()
        except Exception as exc:
            return _failure(name, exc, started)
        return _outcome(ToolStatus.OK, render_result(value), started)

    def _admit(self, name: str, user_id: int, invoke: Callable[[], Any]) -> concurrent.futures.Future[Any] | None:
        with self._lock:
            if self._closed or self._admitted >= self.capacity:
                return None
            self._admitted += 1
        # Copy the context so the tool's log lines carry the turn's request id.
        context = contextvars.copy_context()
        try:
            future = self._pool.submit(context.run, invoke)
        except RuntimeError:  # the pool shut down between the check and the submit
            with self._lock:
                self._admitted -= 1
            return None
        with self._lock:
            self._running[future] = name
        future.add_done_callback(lambda f: self._finished(f, user_id))
        return future

    def _finished(self, future: concurrent.futures.Future[Any], user_id: int) -> None:
        """Runs in the worker thread (or the loop, for a call cancelled while queued)."""
        with self._lock:
            self._admitted -= 1
            self._running.pop(future, None)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._slots.release, user_id)
        except RuntimeError:
            pass  # the loop closed meanwhile: nobody is waiting for the slot

    def in_flight(self, user_id: int) -> int:
        return self._slots.in_flight(user_id)

    async def shutdown(self, grace: float = 5.0) -> list[str]:
        """Refuse new calls, drop queued ones, wait up to ``grace`` for running
        threads. Returns the names of tools still running (their threads
        cannot be stopped; the caller decides how to exit)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        while self.admitted and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with self._lock:
            stuck = sorted(self._running.values())
        if stuck:
            log.warning("tools still running at shutdown: %s", ", ".join(stuck))
        return stuck


async def _awaitable(invoke: Callable[[], Any]) -> Any:
    result = invoke()
    if isinstance(result, Awaitable):
        return await result
    return result


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _outcome(status: ToolStatus, content: str, started: float) -> ToolOutcome:
    if status is not ToolStatus.OK:
        content = error_content(status.value, content)
    return ToolOutcome(status, content, time.monotonic() - started)


def _failure(name: str, exc: Exception, started: float) -> ToolOutcome:
    if isinstance(exc, ToolError):
        detail = str(exc)
    else:
        # Unexpected failures may carry paths or internals: the model gets the
        # kind only, the log gets the traceback.
        log.error("tool %s failed", name, exc_info=exc)
        detail = f"the tool failed unexpectedly ({exc.__class__.__name__})"
    return _outcome(ToolStatus.ERROR, detail[:500], started)
