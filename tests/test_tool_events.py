"""Tool events: the migration, batched writes off the hot path, the /stats summary."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.storage.db import Database
from bot.storage.tool_events import ToolEventRecord, ToolEventRepository
from bot.runtime.tasks import TaskTracker
from bot.tools.events import ToolEventRecorder


def event(tool: str, status: str = "ok", ms: int = 10) -> ToolEventRecord:
    return ToolEventRecord(tool=tool, status=status, duration_ms=ms, user_id=1, chat_id=1, request_id="r1")


async def test_summary_per_tool(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    repo = ToolEventRepository(db)
    old = datetime.now(timezone.utc) - timedelta(days=2)
    await repo.add_many([event("calculate", ms=500)], at=old)
    await repo.add_many(
        [event("calculate", ms=10), event("calculate", "timeout", 20_000), event("current_time", ms=4),
         event("calculate", "invalid", 0)]
    )
    stats = await repo.summary(datetime.now(timezone.utc) - timedelta(days=1))
    await db.dispose()
    assert [(s.tool, s.calls, s.failures, s.timeouts, s.max_ms) for s in stats] == [
        ("calculate", 3, 2, 1, 20_000),
        ("current_time", 1, 0, 0, 4),
    ]
    assert round(stats[0].avg_ms) == 6670


async def test_recorder_batches_in_the_background_and_flushes_at_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    await db.migrate()
    repo = ToolEventRepository(db)
    tasks = TaskTracker()
    recorder = ToolEventRecorder(repo, tasks, flush_interval=0.05, batch_size=3)
    for i in range(7):
        recorder.record(event(f"t{i}"))
    assert await repo.count() == 0  # recording never waits for the database
    assert tasks.pending == 1  # one flush scheduled for the whole burst
    await tasks.drain(timeout=5)
    assert await repo.count() == 7 and recorder.written == 7
    await tasks.drain(timeout=1)
    recorder.record(event("late"))  # the tracker is closing: kept for the final flush
    await recorder.flush()
    assert await repo.count() == 8
    await db.dispose()


async def test_a_database_outage_drops_statistics_not_turns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    tasks = TaskTracker()
    recorder = ToolEventRecorder(ToolEventRepository(db), tasks, flush_interval=0.01, max_pending=2)
    for name in ("a", "b", "c"):
        recorder.record(event(name))
    await recorder.flush()  # no tool_events table: logged, counted, not raised
    assert recorder.dropped == 3 and recorder.written == 0  # one over the bound, two unwritable
    await tasks.drain(timeout=5)
    await db.dispose()
