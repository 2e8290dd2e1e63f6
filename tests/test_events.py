"""The event bus and its batch writers: usage per day and the audit log."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from bot.runtime.events import AdminAction, BatchWriter, EventBus, TurnFinished
from bot.storage.admin import AuditRepository, UsageRepository
from bot.storage.db import Database
from bot.runtime.tasks import TaskTracker
from tests.conftest import BotFactory, eventually
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import PRIVATE

DAY = datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)


def turn(user: int, model: str | None, tokens_in: int, tokens_out: int, *, at: datetime = DAY, status: str = "complete") -> TurnFinished:
    return TurnFinished(user, user, model, status, tokens_in, tokens_out, at)


def test_a_failing_subscriber_does_not_stop_the_others_or_the_publisher() -> None:
    bus = EventBus()
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(TurnFinished, broken)
    bus.subscribe(TurnFinished, seen.append)
    bus.subscribe(AdminAction, lambda e: seen.append(("admin", e)))
    event = turn(1, "m", 1, 1)
    bus.publish(event)
    bus.publish("an event nobody subscribed to")
    assert seen == [event]


async def test_usage_adds_up_across_batches_per_day_user_and_model(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    usage = UsageRepository(db)
    await usage.add_turns([turn(1, "a", 10, 5), turn(1, "a", 1, 1), turn(2, "b", 7, 3)])
    # 23:30 UTC + 1 h is the next UTC day; a failed turn has no model.
    await usage.add_turns([turn(1, "a", 100, 50), turn(1, None, 0, 0, status="failed"),
                           turn(1, "a", 2, 2, at=DAY + timedelta(hours=1))])
    today, tomorrow = date(2026, 11, 20), date(2026, 11, 21)
    assert await usage.tokens_on(1, today) == 167
    assert await usage.tokens_on(1, tomorrow) == 4
    assert await usage.tokens_on(3, today) == 0
    per_day = await usage.per_day(today)
    assert [(d.day, d.turns, d.tokens) for d in per_day] == [(today, 5, 177), (tomorrow, 1, 4)]
    assert [(m.model, m.turns, m.failures, m.tokens_in, m.tokens_out) for m in await usage.per_model(today)] == [
        ("a", 4, 0, 113, 58),
        ("b", 1, 0, 7, 3),
        ("", 1, 1, 0, 0),
    ]
    assert await usage.per_day(tomorrow + timedelta(days=1)) == []
    await db.dispose()


async def test_audit_entries_come_back_newest_first(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    audit = AuditRepository(db)
    await audit.add_many([AdminAction(7, "ban", "42", "banned 42"), AdminAction(7, "unban", "42", "x" * 500)])
    latest = await audit.latest(limit=5)
    assert [(e.action, e.arguments) for e in latest] == [("unban", "42"), ("ban", "42")]
    assert len(latest[0].outcome) == 300  # long outcomes are cut to the column, not refused
    assert await audit.latest(limit=1) == latest[:1]
    await db.dispose()


async def test_batch_writer_writes_one_batch_per_burst(tmp_path) -> None:  # type: ignore[no-untyped-def]
    written: list[list[int]] = []
    seen_while_writing: list[list[int]] = []

    async def write(batch: object) -> None:
        seen_while_writing.append(list(writer.pending))  # the batch in flight still counts
        written.append(list(batch))  # type: ignore[call-overload]

    tasks = TaskTracker()
    writer: BatchWriter[int] = BatchWriter(write, tasks, name="numbers", flush_interval=0.05, batch_size=4)
    for i in range(6):
        writer.record(i)
    assert written == [] and list(writer.pending) == list(range(6))
    await tasks.drain(timeout=5)
    assert written == [[0, 1, 2, 3], [4, 5]] and writer.written == 6
    assert seen_while_writing == [list(range(6)), [4, 5]] and list(writer.pending) == []


async def test_a_chat_turn_is_counted_in_usage(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(chunks=["Hello", " there"], usage=(12, 3)))
    app = await start_bot()
    tg.user_text("hi")
    await tg.wait_messages(PRIVATE, 1)
    today = datetime.now(timezone.utc).date()
    await eventually(lambda: app.usage.tokens_on(PRIVATE, today), lambda tokens: tokens == 15)
    [row] = await app.usage.per_model(today)
    assert row.turns == 1 and row.model.endswith("gpt-4o-mini")
