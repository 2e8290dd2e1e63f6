"""The executor: threads for sync tools, the loop for async ones, parallel
overlap (proved by a barrier, not a clock), timeouts, backpressure, per-user
limits and shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.context import current_request_id
from bot.errors import ToolError
from bot.tools.executor import ToolExecutor, ToolStatus

WAIT = 10.0  # generous bound for threads to meet; never an assertion on speed


@pytest.fixture
async def executor() -> AsyncIterator[ToolExecutor]:
    pool = ToolExecutor(workers=4, queue_size=4, timeout=5.0, per_user=8)
    yield pool
    await pool.shutdown(grace=2.0)


class Gate:
    """Holds sync tools in their threads until the test opens it; always
    opened at teardown so no thread outlives the test."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def hold(self) -> str:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.entered.release()
        self.opened.wait(WAIT)
        with self._lock:
            self.running -= 1
        return "released"

    async def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.entered.acquire, True, WAIT)


@pytest.fixture
def gate() -> Any:
    g = Gate()
    yield g
    g.opened.set()


async def test_sync_tools_run_in_threads_and_async_tools_on_the_loop(executor: ToolExecutor) -> None:
    loop_thread = threading.get_ident()

    def sync_tool() -> int:
        return threading.get_ident()

    async def async_tool() -> int:
        return threading.get_ident()

    sync = await executor.run("s", 1, sync_tool, is_async=False)
    direct = await executor.run("a", 1, async_tool, is_async=True)
    assert sync.ok and int(sync.content) != loop_thread
    assert direct.ok and int(direct.content) == loop_thread


async def test_parallel_calls_really_overlap(executor: ToolExecutor) -> None:
    # A barrier for 4 parties only opens if all 4 calls run at the same time.
    barrier = threading.Barrier(4, timeout=WAIT)
    outcomes = await asyncio.gather(
        *(executor.run("meet", 1, lambda: barrier.wait() >= 0, is_async=False) for _ in range(4))
    )
    assert [o.status for o in outcomes] == [ToolStatus.OK] * 4


async def test_a_hanging_sync_tool_times_out_and_keeps_its_slot(gate: Gate) -> None:
    pool = ToolExecutor(workers=2, queue_size=0, timeout=0.2, per_user=8)
    outcome = await pool.run("hang", 1, gate.hold, is_async=False)
    assert outcome.status is ToolStatus.TIMEOUT and '"error": "timeout"' in outcome.content
    # The thread cannot be stopped, so its admission stays taken until it ends.
    assert pool.admitted == 1
    gate.opened.set()
    assert await pool.shutdown(grace=WAIT) == []
    assert pool.admitted == 0


async def test_a_hanging_async_tool_is_cancelled_at_its_timeout() -> None:
    pool = ToolExecutor(workers=1, queue_size=0, timeout=5.0, per_user=8)
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = await pool.run("forever", 1, forever, is_async=True, timeout=0.1)
    assert outcome.status is ToolStatus.TIMEOUT
    assert cancelled.is_set()
    await pool.shutdown()


async def test_a_full_queue_rejects_fast(gate: Gate) -> None:
    pool = ToolExecutor(workers=1, queue_size=1, timeout=WAIT, per_user=8)
    running = asyncio.ensure_future(pool.run("hold", 1, gate.hold, is_async=False))
    await gate.wait_entered(1)
    queued = asyncio.ensure_future(pool.run("hold", 2, gate.hold, is_async=False))
    await asyncio.sleep(0)  # let it be admitted into the queue
    rejected = await pool.run("hold", 3, gate.hold, is_async=False)
    # Answered while the worker is still blocked: it did not wait in line.
    assert not gate.opened.is_set() and not running.done()
    assert rejected.status is ToolStatus.BUSY and "busy" in rejected.content
    gate.opened.set()
    assert (await running).ok and (await queued).ok
    await pool.shutdown()


async def test_one_user_is_limited_without_blocking_others(gate: Gate) -> None:
    pool = ToolExecutor(workers=4, queue_size=4, timeout=WAIT, per_user=2)
    first_user = [asyncio.ensure_future(pool.run("hold", 1, gate.hold, is_async=False)) for _ in range(4)]
    await gate.wait_entered(2)
    for _ in range(20):  # every waiting call gets its turn on the loop; none may pass the user's limit
        await asyncio.sleep(0)
    assert gate.running == 2 and pool.in_flight(1) == 2  # the other two wait for the user's own slots
    other = await pool.run("quick", 2, lambda: "hi", is_async=False)
    assert other.ok and other.content == "hi"
    gate.opened.set()
    assert all(o.ok for o in await asyncio.gather(*first_user))
    assert gate.peak == 2
    await pool.shutdown()


async def test_a_user_waiting_past_the_deadline_is_told_busy(gate: Gate) -> None:
    pool = ToolExecutor(workers=2, queue_size=0, timeout=WAIT, per_user=1)
    holding = asyncio.ensure_future(pool.run("hold", 1, gate.hold, is_async=False))
    await gate.wait_entered(1)
    waited = await pool.run("hold", 1, gate.hold, is_async=False, timeout=0.1)
    assert waited.status is ToolStatus.BUSY
    gate.opened.set()
    assert (await holding).ok
    # The release was queued to the loop before the result was: no waiting needed.
    assert pool.in_flight(1) == 0
    await pool.shutdown()


@pytest.mark.parametrize(
    ("failure", "expected", "hidden"),
    [
        (ToolError("there is no file notes.md"), "there is no file notes.md", None),
        (RuntimeError("/srv/secret/path exploded"), "RuntimeError", "/srv/secret"),
        (KeyError("token"), "KeyError", "token"),
    ],
)
async def test_errors_become_results_without_leaking_internals(
    executor: ToolExecutor, failure: Exception, expected: str, hidden: str | None
) -> None:
    def broken() -> None:
        raise failure

    outcome = await executor.run("broken", 1, broken, is_async=False)
    assert outcome.status is ToolStatus.ERROR and expected in outcome.content
    if hidden:
        assert hidden not in outcome.content


async def test_results_are_rendered_as_text(executor: ToolExecutor) -> None:
    values: list[tuple[Callable[[], Any], str]] = [
        (lambda: None, "done"),
        (lambda: {"a": [1, "é"]}, '{"a": [1, "é"]}'),
        (lambda: 3.5, "3.5"),
    ]
    for func, text in values:
        assert (await executor.run("v", 1, func, is_async=False)).content == text


async def test_tools_log_with_the_turns_request_id(executor: ToolExecutor) -> None:
    current_request_id.set("req-abc")
    outcome = await executor.run("id", 1, current_request_id.get, is_async=False)
    assert outcome.content == "req-abc"


async def test_shutdown_refuses_new_calls_and_names_stuck_tools(gate: Gate) -> None:
    pool = ToolExecutor(workers=1, queue_size=2, timeout=WAIT, per_user=8)
    stuck = asyncio.ensure_future(pool.run("stuck_tool", 1, gate.hold, is_async=False))
    await gate.wait_entered(1)
    queued = asyncio.ensure_future(pool.run("never_started", 1, gate.hold, is_async=False))
    await asyncio.sleep(0)
    assert await pool.shutdown(grace=0.1) == ["stuck_tool"]
    after = await pool.run("late", 1, lambda: "x", is_async=False)
    assert after.status is ToolStatus.BUSY and "shutting down" in after.content
    gate.opened.set()
    assert (await stuck).ok
    # The queued call was dropped by the shutdown and never ran.
    assert (await queued).status is ToolStatus.BUSY
    assert gate.peak == 1
