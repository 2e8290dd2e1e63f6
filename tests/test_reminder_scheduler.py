"""The scheduler against a real database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set) and the real AsyncIOScheduler. The clock is shifted
so a firing is always a fraction of a second away: nothing waits for real
time, and nothing asserts on wall-clock durations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

import pytest
import pytz
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.runtime.pacing import Pacer
from bot.periodic import PeriodicTasks, RetentionConfig, SystemJobs, daily_at
from bot.reminders.clock import ShiftedClock
from bot.errors import RecipientBlocked
from bot.reminders.notifier import DeliveryFailed
from bot.reminders.recurrence import Rule
from bot.storage.db import Database
from bot.storage.reminders import ReminderRecord, ReminderRepository
from bot.storage.repositories import UserProfile, UserRepository
from bot.reminders.scheduler import ReminderScheduler, SchedulerConfig
from bot.runtime.tasks import TaskTracker
from tests.fakes.notifier import RecordingNotifier
from tests.limits import WAIT_LIMIT

START = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)
SOON = timedelta(milliseconds=150)


async def eventually(check: Callable[[], bool], timeout: float = WAIT_LIMIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def nothing_left_to_fire(scheduler: ReminderScheduler) -> None:
    """Wait until no timer is armed and nothing waits for a delivery worker:
    from then on nothing can be delivered without a refill. A timer stays
    armed until its delivery has finished (or been retried, which arms it
    again), so this also waits for deliveries in flight."""

    def idle() -> bool:
        health = scheduler.health()
        return health["armed"] == 0 and health["queued"] == 0

    await eventually(idle)


@dataclass
class Rig:
    db: Database
    repo: ReminderRepository
    clock: ShiftedClock
    notifier: RecordingNotifier
    errors: list[tuple[BaseException, str]]
    # Where the test put the clock; ``running`` puts it back there, so the real
    # time that setting up took (seconds on a loaded machine) does not make a
    # reminder due "soon" already late when the scheduler starts.
    set_to: datetime = START
    # The APScheduler of the scheduler ``running`` started, for tests that
    # hold its timers (``running(timers_paused=True)``) and release them.
    aps: AsyncIOScheduler | None = None

    def set_clock(self, moment: datetime) -> None:
        self.set_to = moment
        self.clock.set(moment)

    async def user(self, user_id: int) -> None:
        await UserRepository(self.db, "UTC").touch(UserProfile(user_id, f"User{user_id}"), "user")

    async def add(self, user_id: int, at: datetime, *, rule: Rule | None = None, tz: str = "UTC", text: str = "x") -> ReminderRecord:
        return await self.repo.add(
            user_id=user_id, chat_id=user_id, text=text, timezone=tz,
            rule=rule.encode() if rule else None, first=at, now=self.clock.now(), max_active=1000,
        )

    @asynccontextmanager
    async def running(self, *, timers_paused: bool = False, **config: object) -> AsyncIterator[ReminderScheduler]:
        aps = AsyncIOScheduler(timezone=pytz.utc)
        # Paused, timers are armed but none runs until ``aps.resume()``; a job
        # that fell due meanwhile runs then (misfire_grace_time=None).
        aps.start(paused=timers_paused)
        self.aps = aps
        scheduler = ReminderScheduler(
            self.repo, self.notifier, scheduler=aps, clock=self.clock, pacer=Pacer(1000),
            tasks=TaskTracker(), on_error=lambda exc, name: self.errors.append((exc, name)),
            config=SchedulerConfig(**config),  # type: ignore[arg-type]
        )
        self.clock.set(self.set_to)
        await scheduler.start()
        try:
            yield scheduler
        finally:
            await scheduler.stop()
            aps.shutdown(wait=False)


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield Rig(db, ReminderRepository(db), ShiftedClock(START), RecordingNotifier(), [])
    finally:
        await db.dispose()


async def test_a_reminder_fires_once_at_its_time_and_is_recorded(rig: Rig) -> None:
    await rig.user(1)
    record = await rig.add(1, START + SOON, text="call mom")
    async with rig.running():
        await eventually(lambda: len(rig.notifier.delivered) == 1)
        [due] = rig.notifier.delivered
        assert (due.id, due.text, due.due_at, due.late) == (record.id, "call mom", START + SOON, False)
    # Leaving the block stops the scheduler, which lets the delivery in flight record its outcome.
    stored = await rig.repo.get(record.id)
    assert stored is not None and (stored.status, stored.fire_count, stored.next_fire_at) == ("fired", 1, None)
    assert rig.notifier.attempts == 1 and not rig.errors


async def test_only_reminders_due_soon_get_timers_the_rest_wait_for_a_refill(rig: Rig) -> None:
    await rig.user(1)
    near = await rig.add(1, START + SOON)
    far = await rig.add(1, START + timedelta(hours=3))
    async with rig.running(horizon=timedelta(minutes=10)) as scheduler:
        assert set(scheduler._armed) == {near.id}  # noqa: SLF001 - what is held in memory is the point
        await eventually(lambda: len(rig.notifier.delivered) == 1)
        rig.clock.set(far.next_fire_at - SOON)  # type: ignore[operator]
        await scheduler.refill()
        await eventually(lambda: len(rig.notifier.delivered) == 2)
    assert [d.id for d in rig.notifier.delivered] == [near.id, far.id]


async def test_reminders_due_during_downtime_are_delivered_once_late_on_start(rig: Rig) -> None:
    await rig.user(1)
    one_off = await rig.add(1, START - timedelta(hours=5), text="missed")
    daily = await rig.add(1, START - timedelta(days=2), rule=Rule("daily", at=time(7, 0)), text="pills")
    async with rig.running() as scheduler:
        await eventually(lambda: len(rig.notifier.delivered) == 2)
        await nothing_left_to_fire(scheduler)
        await scheduler.refill()
        assert scheduler.health()["armed"] == 0, "recorded as delivered: a refill arms nothing again"
    delivered = {d.id: d for d in rig.notifier.delivered}
    assert len(rig.notifier.delivered) == 2
    assert delivered[one_off.id].late and delivered[one_off.id].due_at == START - timedelta(hours=5)
    assert delivered[daily.id].late and delivered[daily.id].due_at == START - timedelta(days=2)
    stored = await rig.repo.get(daily.id)
    # Missed days are not replayed: the next firing is the next future 07:00.
    assert stored is not None and stored.next_fire_at == datetime(2026, 11, 22, 7, 0, tzinfo=timezone.utc)


async def test_a_crash_between_send_and_record_never_sends_twice(rig: Rig) -> None:
    await rig.user(1)
    record = await rig.add(1, START - timedelta(minutes=1))
    daily = await rig.add(1, START - timedelta(minutes=1), rule=Rule("daily", at=time(8, 59)))
    # The previous process claimed both (and handed them to Telegram), then died.
    assert await rig.repo.claim(record.id, record.revision, START - timedelta(seconds=30)) is not None
    assert await rig.repo.claim(daily.id, daily.revision, START - timedelta(seconds=30)) is not None
    async with rig.running() as scheduler:
        # Start-up recorded both claims before arming anything: nothing is due again.
        assert scheduler.health()["armed"] == 0
    assert rig.notifier.delivered == []
    one_off = await rig.repo.get(record.id)
    repeating = await rig.repo.get(daily.id)
    assert one_off is not None and (one_off.status, one_off.fire_count) == ("fired", 1)
    assert repeating is not None and repeating.status == "active"
    assert repeating.next_fire_at == datetime(2026, 11, 22, 8, 59, tzinfo=timezone.utc)


async def test_a_blocked_chat_has_its_reminders_paused_not_retried(rig: Rig) -> None:
    await rig.user(1)
    await rig.user(2)
    first = await rig.add(1, START + SOON)
    later = await rig.add(1, START + timedelta(minutes=5))
    other = await rig.add(2, START + SOON)
    rig.notifier.failures[1] = [RecipientBlocked("Forbidden: bot was blocked by the user")]
    async with rig.running() as scheduler:
        await eventually(lambda: rig.notifier.attempts == 2)
        await nothing_left_to_fire(scheduler)  # a retry would be armed, and would fire first
        assert rig.notifier.attempts == 2, "a blocked chat must not be retried"
    assert [d.id for d in rig.notifier.delivered] == [other.id]
    for reminder in (first, later):
        stored = await rig.repo.get(reminder.id)
        assert stored is not None and stored.status == "paused"
    resumed = await rig.repo.resume_paused(1, None, START)
    assert {r.id for r in resumed} == {first.id, later.id}


async def test_a_transient_failure_is_retried_then_delivered(rig: Rig) -> None:
    await rig.user(1)
    record = await rig.add(1, START + SOON)
    rig.notifier.failures[1] = [DeliveryFailed("Timed out"), DeliveryFailed("Bad Gateway")]
    async with rig.running(retry_delay=0.05):
        await eventually(lambda: len(rig.notifier.delivered) == 1)
    assert rig.notifier.attempts == 3
    stored = await rig.repo.get(record.id)
    assert stored is not None and (stored.status, stored.attempts) == ("fired", 0)


async def test_a_firing_is_given_up_after_max_attempts(rig: Rig) -> None:
    await rig.user(1)
    record = await rig.add(1, START + SOON)
    rig.notifier.failures[1] = [DeliveryFailed("down")] * 3
    async with rig.running(retry_delay=0.02, max_attempts=3) as scheduler:
        await eventually(lambda: scheduler.failed == 1)
    stored = await rig.repo.get(record.id)
    assert stored is not None and stored.status == "failed" and rig.notifier.attempts == 3


async def test_cancelled_and_snoozed_reminders_do_not_fire_at_the_old_time(rig: Rig) -> None:
    await rig.user(1)
    cancelled = await rig.add(1, START + SOON)
    snoozed = await rig.add(1, START + SOON)
    kept = await rig.add(1, START + SOON * 2)
    # The timers stay held while the user acts: on a loaded machine the two
    # changes can take longer than SOON, and a snooze after the reminder fired
    # is a legitimate snooze of a delivered reminder, not what is tested here.
    async with rig.running(timers_paused=True) as scheduler:
        assert scheduler.health()["armed"] == 3
        assert await rig.repo.cancel(cancelled.id, 1, START) is not None
        moved = await rig.repo.reschedule(snoozed.id, 1, START + timedelta(hours=1), START)
        assert moved is not None
        scheduler.track(moved)  # beyond the horizon: its old timer is disarmed
        assert rig.aps is not None
        rig.aps.resume()
        await eventually(lambda: len(rig.notifier.delivered) == 1)
        await nothing_left_to_fire(scheduler)  # the cancelled one's timer fired and found nothing
    assert [d.id for d in rig.notifier.delivered] == [kept.id]


@pytest.mark.parametrize(
    ("tz", "day_before_utc", "expected_utc"),
    [
        # 09:00 local the day before and on the day the clocks change.
        ("Europe/Berlin", datetime(2026, 3, 28, 8, 0, tzinfo=timezone.utc), datetime(2026, 3, 29, 7, 0, tzinfo=timezone.utc)),
        ("Europe/Berlin", datetime(2026, 10, 24, 7, 0, tzinfo=timezone.utc), datetime(2026, 10, 25, 8, 0, tzinfo=timezone.utc)),
        ("America/New_York", datetime(2026, 3, 7, 14, 0, tzinfo=timezone.utc), datetime(2026, 3, 8, 13, 0, tzinfo=timezone.utc)),
        ("America/New_York", datetime(2026, 10, 31, 13, 0, tzinfo=timezone.utc), datetime(2026, 11, 1, 14, 0, tzinfo=timezone.utc)),
    ],
)
async def test_a_daily_reminder_fires_at_nine_local_through_a_dst_change(
    rig: Rig, tz: str, day_before_utc: datetime, expected_utc: datetime
) -> None:
    await rig.user(1)
    rig.set_clock(day_before_utc - SOON)
    record = await rig.add(1, day_before_utc, rule=Rule("daily", at=time(9, 0)), tz=tz)
    async with rig.running() as scheduler:
        await eventually(lambda: len(rig.notifier.delivered) == 1)
        await eventually(lambda: record.id not in scheduler._armed)  # noqa: SLF001
        stored = await rig.repo.get(record.id)
        assert stored is not None and stored.next_fire_at == expected_utc
        rig.clock.set(expected_utc - SOON)
        await scheduler.resync()
        await eventually(lambda: len(rig.notifier.delivered) == 2)
    assert [d.due_at for d in rig.notifier.delivered] == [day_before_utc, expected_utc]
    assert [d.due_at.astimezone(pytz.timezone(tz)).hour for d in rig.notifier.delivered] == [9, 9]


async def test_periodic_tasks_guard_overlaps_and_report_failures(rig: Rig) -> None:
    aps = AsyncIOScheduler(timezone=pytz.utc)
    aps.start()
    errors: list[tuple[BaseException, str]] = []
    periodic = PeriodicTasks(aps, rig.clock, lambda exc, name: errors.append((exc, name)))
    release = asyncio.Event()
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    async def broken() -> None:
        raise RuntimeError("disk full")

    try:
        periodic.add("slow", slow, daily_at(time(3, 0), "UTC"))
        periodic.add("broken", broken, daily_at(time(4, 0), "UTC"))
        assert {job.id for job in aps.get_jobs()} == {"system:slow", "system:broken"}
        first = asyncio.ensure_future(periodic.run_now("slow"))
        await asyncio.sleep(0)
        assert await periodic.run_now("slow") is False  # skipped: the first run is still going
        release.set()
        assert await first is True
        assert calls == 1 and periodic.tasks["slow"].skipped == 1
        assert await periodic.run_now("broken") is False
        assert [(str(e), n) for e, n in errors] == [("disk full", "periodic task broken")]
        assert periodic.tasks["broken"].last_error == "RuntimeError: disk full"
    finally:
        aps.shutdown(wait=False)


async def test_pruning_health_and_backup_jobs(rig: Rig) -> None:
    await rig.user(1)
    old = await rig.add(1, START - timedelta(days=40))
    await rig.repo.cancel(old.id, 1, START - timedelta(days=40))
    recent = await rig.add(1, START + timedelta(days=1))
    backups: list[str] = []

    async def backup() -> None:
        backups.append("done")

    aps = AsyncIOScheduler(timezone=pytz.utc)
    aps.start()
    try:
        async with rig.running() as scheduler:
            periodic = PeriodicTasks(aps, rig.clock, lambda exc, name: rig.errors.append((exc, name)))
            jobs = SystemJobs(periodic, rig.repo, scheduler, rig.clock, RetentionConfig(reminder_days=30), backup=backup)
            jobs.schedule(timezone="Europe/Berlin", prune_at=time(4, 15), backup_at=time(3, 30), health_at=time(9, 0))
            assert await periodic.run_now("prune") and periodic.tasks["prune"].last_result == {"reminders": 1, "messages": 0}
            assert await periodic.run_now("backup") and backups == ["done"]
            assert await periodic.run_now("health")
            report = periodic.tasks["health"].last_result
            assert isinstance(report, dict) and report["running"] is True
            assert report["stored"]["active"] == 1  # type: ignore[index]
    finally:
        aps.shutdown(wait=False)
    assert await rig.repo.get(old.id) is None and await rig.repo.get(recent.id) is not None


async def test_a_firing_recovered_by_the_next_leader_is_not_recorded_again_by_the_old_one(rig: Rig) -> None:
    """The scaled mode's handover: leader A claimed a reminder and is still
    sending it when it loses the lead; leader B finds the claim stale and
    records the firing. A's outcome then arrives: it is not recorded a
    second time (one firing counted), and neither is a retry or a give-up."""
    await rig.user(1)
    daily = await rig.add(1, START - timedelta(minutes=1), rule=Rule("daily", at=time(8, 59)))
    claimed = await rig.repo.claim(daily.id, daily.revision, START)
    assert claimed is not None
    [stale] = await rig.repo.stale_claims(START + timedelta(seconds=1))
    assert stale.claimed_at == claimed.claimed_at
    recovered = await rig.repo.delivered(daily.id, stale.claimed_at, START, START + timedelta(days=1))
    assert recovered is not None and recovered.fire_count == 1

    late = START + timedelta(seconds=5)
    assert await rig.repo.delivered_many({daily.id: (claimed.claimed_at, START + timedelta(days=1))}, late) == []
    assert await rig.repo.release(daily.id, claimed.claimed_at, late, max_attempts=3) == 0
    assert await rig.repo.gave_up(daily.id, claimed.claimed_at, late, START + timedelta(days=1)) is None
    stored = await rig.repo.get(daily.id)
    assert stored is not None and (stored.fire_count, stored.status, stored.attempts) == (1, "active", 0)
