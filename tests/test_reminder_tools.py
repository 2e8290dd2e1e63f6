"""The model's reminder tools, called directly (the tool registry that will
expose them to the model is built separately): they parse `when` exactly like
/remind, act only for the user in the RequestContext, and answer bad input
with a message the model can relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
import pytz
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.auth import Role
from bot.context import ChatType, RequestContext
from bot.runtime.pacing import Pacer
from bot.reminders.clock import ShiftedClock
from bot.reminders.parsing import parse_reminder
from bot.reminders.scheduler import ReminderScheduler
from bot.reminders.service import ReminderService
from bot.reminders.tools import ReminderTools, ToolInputError
from bot.storage.db import Database
from bot.storage.models import Reminder
from bot.storage.reminders import ReminderRepository
from bot.storage.repositories import UserProfile, UserRepository
from bot.runtime.tasks import TaskTracker
from tests.fakes.notifier import RecordingNotifier
from tests.limits import WAIT_LIMIT

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)


def context(user_id: int, tz: str = "Europe/Berlin", chat_id: int | None = None) -> RequestContext:
    return RequestContext(
        user_id=user_id, chat_id=chat_id or user_id, chat_type=ChatType.PRIVATE if not chat_id else ChatType.GROUP,
        role=Role.USER, language="en", timezone=tz, user_name="Ann", request_id="r1", received_at=NOW,
    )


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock(NOW)


@pytest.fixture
async def service(database_url: str, clock: ShiftedClock) -> AsyncIterator[ReminderService]:
    db = Database(database_url)
    await db.migrate()
    for user_id in (1, 2):
        await UserRepository(db, "Europe/Berlin").touch(UserProfile(user_id, "Ann"), "user")
    aps = AsyncIOScheduler(timezone=pytz.utc)
    aps.start()
    repo = ReminderRepository(db)
    scheduler = ReminderScheduler(
        repo, RecordingNotifier(), scheduler=aps, clock=clock, pacer=Pacer(1000),
        tasks=TaskTracker(), on_error=lambda exc, name: None,
    )
    await scheduler.start()
    try:
        yield ReminderService(repo, scheduler, clock, max_per_user=3)
    finally:
        await scheduler.stop()
        aps.shutdown(wait=False)
        await db.dispose()


@pytest.fixture
def tools(service: ReminderService) -> ReminderTools:
    return ReminderTools(service)


async def test_create_list_and_cancel(tools: ReminderTools) -> None:
    created = await tools.create_reminder(context(1), "call mom", "tomorrow at 9")
    assert created == {
        "id": created["id"], "text": "call mom", "fires_at": "2026-11-22 09:00",
        "timezone": "Europe/Berlin", "repeats": None,
    }
    daily = await tools.create_reminder(context(1), "pills", "tomorrow 8:30", "daily")
    assert (daily["fires_at"], daily["repeats"]) == ("2026-11-22 08:30", "every day at 08:30")
    listed = await tools.list_reminders(context(1))
    assert [(r["id"], r["next"], r["paused"]) for r in listed] == [
        (daily["id"], "2026-11-22 08:30", False), (created["id"], "2026-11-22 09:00", False),
    ]
    assert await tools.cancel_reminder(context(1), created["id"]) == {"id": created["id"], "text": "call mom", "cancelled": True}
    assert [r["id"] for r in await tools.list_reminders(context(1))] == [daily["id"]]


async def test_when_is_parsed_exactly_like_remind(tools: ReminderTools) -> None:
    for phrase in ("in 10 minutes", "через 2 часа", "every monday 10:00", "friday 18:00"):
        created = await tools.create_reminder(context(2, tz="America/New_York"), "x", phrase)
        expected = parse_reminder(f"{phrase} x", "America/New_York", NOW).schedule.first
        fires = datetime.strptime(created["fires_at"], "%Y-%m-%d %H:%M")
        local = expected.astimezone(pytz.timezone("America/New_York")).replace(tzinfo=None, second=0, microsecond=0)
        assert abs(fires - local) < timedelta(minutes=1), phrase
        await tools.cancel_reminder(context(2), created["id"])


async def test_iso_8601_is_accepted(tools: ReminderTools) -> None:
    created = await tools.create_reminder(context(1), "xmas", "2026-12-25T10:00:00+03:00")
    assert created["fires_at"] == "2026-12-25 08:00"  # 07:00 UTC in Berlin


async def test_a_user_cannot_see_or_cancel_someone_elses_reminders(tools: ReminderTools) -> None:
    mine = await tools.create_reminder(context(1), "secret", "tomorrow at 9")
    assert await tools.list_reminders(context(2)) == []
    with pytest.raises(ToolInputError, match="no active reminder with id"):
        await tools.cancel_reminder(context(2), mine["id"])
    assert len(await tools.list_reminders(context(1))) == 1


@pytest.mark.parametrize("reminder_id", [0, -1, 2**63, 10**30])
async def test_an_id_no_reminder_can_have_is_no_such_reminder(tools: ReminderTools, reminder_id: int) -> None:
    with pytest.raises(ToolInputError, match="no active reminder with id"):
        await tools.cancel_reminder(context(1), reminder_id)


@pytest.mark.parametrize(
    ("text", "when", "recurrence", "message"),
    [
        ("", "tomorrow at 9", None, "What should I remind you of?"),
        ("x" * 1001, "tomorrow at 9", None, "too long"),
        ("call", "", None, "couldn't find when"),
        ("call", "whenever you like", None, "couldn't find when"),
        ("call", "tomorrow at 9 call mom", None, "couldn't read"),
        ("call", "2020-01-01T10:00", None, "has already passed"),
        ("call", "tomorrow at 9", "fortnightly", "can't repeat"),
        ("call", "tomorrow at 9", "0 9 * * 9", "cron line doesn't work"),
    ],
)
async def test_bad_input_is_explained_to_the_model(
    tools: ReminderTools, text: str, when: str, recurrence: str | None, message: str
) -> None:
    with pytest.raises(ToolInputError, match=message):
        await tools.create_reminder(context(1), text, when, recurrence)


async def test_the_per_user_limit_is_explained(tools: ReminderTools) -> None:
    for i in range(3):
        await tools.create_reminder(context(1), f"r{i}", "tomorrow at 9")
    with pytest.raises(ToolInputError, match="already have 3 active reminders"):
        await tools.create_reminder(context(1), "one more", "tomorrow at 9")


# --- The same tool call re-run after a crash (RequestContext.tool_call_key) ------


def call_of(ctx: RequestContext, request_id: str, call: str = "create_reminder") -> RequestContext:
    """The context the tool manager hands one call of turn ``request_id``."""
    return ctx.model_copy(update={"request_id": request_id, "tool_call_key": f"{request_id}:{call}"})


async def test_the_same_call_of_the_same_turn_creates_one_reminder_and_answers_the_same(
    tools: ReminderTools, clock: ShiftedClock
) -> None:
    """Killed after the row was stored, the resumed turn calls again: it
    gets the reminder the first call made, with the time that call
    announced, although "in 10 minutes" now means later."""
    first = await tools.create_reminder(call_of(context(1), "tg7"), "stretch", "in 10 minutes")
    clock.advance(timedelta(minutes=3))
    again = await tools.create_reminder(call_of(context(1), "tg7"), "stretch", "in 10 minutes")
    assert again == first and first["fires_at"] == "2026-11-21 10:10"
    assert [r["id"] for r in await tools.list_reminders(context(1))] == [first["id"]]


async def test_another_turn_making_the_same_call_creates_another_reminder(tools: ReminderTools) -> None:
    first = await tools.create_reminder(call_of(context(1), "tg7"), "call mom", "tomorrow at 9")
    other = await tools.create_reminder(call_of(context(1), "tg8"), "call mom", "tomorrow at 9")
    unkeyed = await tools.create_reminder(context(1), "call mom", "tomorrow at 9")  # /remind, the API: no key
    assert len({first["id"], other["id"], unkeyed["id"]}) == 3
    assert len(await tools.list_reminders(context(1))) == 3


async def test_an_insert_racing_one_under_the_same_key_takes_its_row(database_url: str) -> None:
    """Only PostgreSQL can race here (SQLite's writes queue in one process,
    and the scaled mode requires PostgreSQL): the other transaction holds an
    uncommitted row with the key, so add() finds nothing, and its insert
    waits for that transaction. Once it commits, ON CONFLICT DO NOTHING
    makes add() return that row instead of failing on the UNIQUE index."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers; no race to lose")
    db = Database(database_url)
    await db.migrate()
    await UserRepository(db, "UTC").touch(UserProfile(1, "Ann"), "user")
    repo = ReminderRepository(db)
    try:
        async with db.session() as other:
            first = Reminder(
                user_id=1, chat_id=1, text="call mom", timezone="UTC", status="active",
                next_fire_at=NOW + timedelta(days=1), idempotency_key="tg7:create",
            )
            other.add(first)
            await other.flush()
            racing = asyncio.ensure_future(repo.add(
                user_id=1, chat_id=1, text="call mom", timezone="UTC", rule=None,
                first=NOW + timedelta(days=1), now=NOW, max_active=10, idempotency_key="tg7:create",
            ))
            await until_an_insert_waits_for_a_lock(other, racing)
        record = await racing
        assert record.id == first.id
        assert [r.id for r in await repo.listed(1)] == [first.id]
    finally:
        await db.dispose()


async def until_an_insert_waits_for_a_lock(session: AsyncSession, racing: asyncio.Future[object]) -> None:
    for _ in range(int(WAIT_LIMIT * 50)):
        # A transaction sees one snapshot of pg_stat_activity unless told to drop it.
        await session.execute(text("SELECT pg_stat_clear_snapshot()"))
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO reminders%'"
            )
        )
        if waiting or racing.done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the racing insert never waited for the other transaction")


async def test_a_call_re_run_at_the_limit_is_not_refused(tools: ReminderTools) -> None:
    """Its own reminder already counts toward the limit (3 here)."""
    for i in range(3):
        last = await tools.create_reminder(call_of(context(1), f"tg{i}"), f"r{i}", "tomorrow at 9")
    assert await tools.create_reminder(call_of(context(1), "tg2"), "r2", "tomorrow at 9") == last
    with pytest.raises(ToolInputError, match="already have 3 active reminders"):
        await tools.create_reminder(call_of(context(1), "tg3"), "r3", "tomorrow at 9")


async def test_cancelling_again_answers_the_same(tools: ReminderTools) -> None:
    created = await tools.create_reminder(context(1), "call mom", "tomorrow at 9")
    cancelled = await tools.cancel_reminder(context(1), created["id"])
    assert await tools.cancel_reminder(context(1), created["id"]) == cancelled
    with pytest.raises(ToolInputError, match="no active reminder with id"):
        await tools.cancel_reminder(context(2), created["id"])  # still nobody else's


async def test_a_remind_command_handled_again_finds_the_reminder_it_made(service: ReminderService) -> None:
    """/remind's update handled a second time at the next start (the crash
    came before it was marked done) keeps its request id: one reminder.
    Another request makes another."""
    first = await service.remind(context(1), "tomorrow at 9 call mom")
    again = await service.remind(context(1), "tomorrow at 9 call mom")
    assert again.record.id == first.record.id
    other = await service.remind(context(1).model_copy(update={"request_id": "r2"}), "tomorrow at 9 call mom")
    assert other.record.id != first.record.id
    assert len(await service.listed(context(1))) == 2
