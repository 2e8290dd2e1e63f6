"""The model's reminder tools, called directly (the tool registry that will
expose them to the model is built separately): they parse `when` exactly like
/remind, act only for the user in the RequestContext, and answer bad input
with a message the model can relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
import pytz
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
from bot.storage.reminders import ReminderRepository
from bot.storage.repositories import UserProfile, UserRepository
from bot.runtime.tasks import TaskTracker
from tests.test_reminder_scheduler import RecordingNotifier

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)


def context(user_id: int, tz: str = "Europe/Berlin", chat_id: int | None = None) -> RequestContext:
    return RequestContext(
        user_id=user_id, chat_id=chat_id or user_id, chat_type=ChatType.PRIVATE if not chat_id else ChatType.GROUP,
        role=Role.USER, language="en", timezone=tz, user_name="Ann", request_id="r1", received_at=NOW,
    )


@pytest.fixture
async def tools(database_url: str) -> AsyncIterator[ReminderTools]:
    db = Database(database_url)
    await db.migrate()
    for user_id in (1, 2):
        await UserRepository(db, "Europe/Berlin").touch(UserProfile(user_id, "Ann"), "user")
    aps = AsyncIOScheduler(timezone=pytz.utc)
    aps.start()
    clock = ShiftedClock(NOW)
    repo = ReminderRepository(db)
    scheduler = ReminderScheduler(
        repo, RecordingNotifier(), scheduler=aps, clock=clock, pacer=Pacer(1000),
        tasks=TaskTracker(), on_error=lambda exc, name: None,
    )
    await scheduler.start()
    try:
        yield ReminderTools(ReminderService(repo, scheduler, clock, max_per_user=3))
    finally:
        await scheduler.stop()
        aps.shutdown(wait=False)
        await db.dispose()


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
