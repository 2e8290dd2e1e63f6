"""Timing and delivering reminders.

The reminders table is the truth. APScheduler (AsyncIOScheduler, in-memory
job store) holds one timer per reminder due within ``horizon``; a periodic
refill arms the next ones, so 100,000 stored reminders cost one indexed query
at start, not 100,000 jobs. A timer only puts the reminder on a queue;
delivery workers take a permit from the shared Pacer, claim the row (its own
short transaction), hand it to the Notifier, and record the outcome.

Delivery is at most once across a crash: a row still claimed at start was
(most likely) handed to the channel and is recorded as delivered, not sent
again; the rare loss is a row claimed and still waiting for its send permit. A
reminder that fell due while the bot was down is delivered once, late, with
its original time; a recurring one then moves to its next future firing."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.runtime.pacing import Pacer
from bot.reminders.clock import Clock
from bot.errors import RecipientBlocked
from bot.reminders.notifier import DeliveryFailed, DueReminder, Notifier
from bot.reminders.recurrence import Rule, RuleError
from bot.storage.reminders import Claimed, ReminderRecord, ReminderRepository
from bot.runtime.tasks import ErrorHandler, TaskTracker

log = logging.getLogger(__name__)

_STOP = (-1, -1)  # queue sentinel


@dataclass(frozen=True)
class SchedulerConfig:
    horizon: timedelta = timedelta(minutes=10)  # arm timers for reminders due this soon
    refill_interval: float = 60.0  # seconds between refills; must be well under horizon
    late_after: timedelta = timedelta(minutes=5)  # later than this, the message says so
    max_armed: int = 5000  # timers armed per refill at most (overdue backlog drains in turns)
    workers: int = 8  # deliveries in flight at once (the pacer sets the rate)
    max_attempts: int = 5  # transient failures before a firing is given up
    retry_delay: float = 30.0  # seconds, times the attempt number
    stale_claim_after: timedelta = timedelta(minutes=10)


def next_firing(record: ReminderRecord, after: datetime) -> datetime | None:
    """The next firing of a recurring reminder strictly after ``after``."""
    if record.rule is None:
        return None
    try:
        return Rule.decode(record.rule).next_after(after, record.timezone)
    except RuleError:
        log.exception("reminder %s has a rule that no longer evaluates; it stops repeating", record.id)
        return None


class ReminderScheduler:
    def __init__(
        self,
        repo: ReminderRepository,
        notifier: Notifier,
        *,
        scheduler: AsyncIOScheduler,
        clock: Clock,
        pacer: Pacer,
        tasks: TaskTracker,
        on_error: ErrorHandler,
        config: SchedulerConfig = SchedulerConfig(),
    ) -> None:
        self._repo = repo
        self._notifier = notifier
        self._aps = scheduler
        self._clock = clock
        self._pacer = pacer
        self._tasks = tasks
        self._on_error = on_error
        self.config = config
        self._armed: dict[int, int] = {}  # reminder id -> revision its timer was armed for
        self._queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        # Outcomes of sends, written in batches: a row stays claimed until its
        # outcome is written, and a claimed row counts as delivered after a
        # crash, so batching loses nothing and saves a transaction per send.
        # id -> (revision, the claim's mark, next firing)
        self._outcomes: dict[int, tuple[int, datetime, datetime | None]] = {}
        self._outcomes_ready = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None
        self._started_at: datetime | None = None
        self._running = False
        # Health figures, reported by the daily check.
        self.delivered = 0
        self.failed = 0
        self.blocked = 0
        self.lateness: deque[float] = deque(maxlen=10_000)
        self.last_refill_at: datetime | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = self._clock.now()
        await self._recover_claims(self._started_at)  # nothing is in flight yet: every claim is stale
        self._aps.add_listener(self._job_failed, EVENT_JOB_ERROR)
        self._running = True
        for number in range(self.config.workers):
            self._workers.append(self._tasks.spawn(self._work(), name=f"reminder-delivery-{number}"))
        self._recorder = self._tasks.spawn(self._record_outcomes(), name="reminder-recorder")
        await self.refill()
        self._aps.add_job(
            self._periodic_refill, IntervalTrigger(seconds=self.config.refill_interval),
            id="reminders:refill", max_instances=1, coalesce=True, misfire_grace_time=None,
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop timing; let sends in flight finish (bounded). Queued, unclaimed
        reminders stay active in the table and fire after the next start."""
        if not self._running:
            return
        self._running = False
        for reminder_id in list(self._armed):
            self._disarm(reminder_id)
        while not self._queue.empty():
            self._queue.get_nowait()
        for _ in self._workers:
            self._queue.put_nowait(_STOP)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._workers.clear()
        if self._recorder is not None:
            # Not cancelled: a cancelled flush would leave delivered rows claimed.
            self._outcomes_ready.set()
            _, pending = await asyncio.wait({self._recorder}, timeout=timeout)
            for task in pending:
                task.cancel()
            self._recorder = None
        await self._flush_outcomes()

    # --- timers -----------------------------------------------------------------------------

    def track(self, record: ReminderRecord) -> None:
        """Arm or disarm a reminder after it was created or changed."""
        if not self._running:
            return
        due_soon = self._clock.now() + self.config.horizon
        if record.status == "active" and record.next_fire_at is not None and record.next_fire_at <= due_soon:
            self._arm(record.id, record.revision, record.next_fire_at)
        elif record.id in self._armed:
            self._disarm(record.id)

    def untrack(self, reminder_id: int) -> None:
        if reminder_id in self._armed:
            self._disarm(reminder_id)

    def _arm(self, reminder_id: int, revision: int, fire_at: datetime) -> None:
        # Timers run on real time; the clock may be shifted (tests, benchmark),
        # so convert "fire_at on the clock" into "that far from now, for real".
        run_at = datetime.now(timezone.utc) + (fire_at - self._clock.now())
        self._aps.add_job(
            self._due, DateTrigger(run_at), args=(reminder_id, revision), id=f"rem:{reminder_id}",
            replace_existing=True, misfire_grace_time=None, coalesce=True,
        )
        self._armed[reminder_id] = revision

    def _disarm(self, reminder_id: int) -> None:
        self._armed.pop(reminder_id, None)
        try:
            self._aps.remove_job(f"rem:{reminder_id}")
        except JobLookupError:
            pass  # already fired and queued; the claim will find nothing to do

    async def _due(self, reminder_id: int, revision: int) -> None:
        self._queue.put_nowait((reminder_id, revision))

    async def refill(self) -> int:
        """Arm timers for everything due within the horizon; returns how many were new."""
        now = self._clock.now()
        self.last_refill_at = now
        armed = 0
        for row in await self._repo.due_before(now + self.config.horizon, self.config.max_armed):
            if self._armed.get(row.id) == row.revision:
                continue
            self._arm(row.id, row.revision, row.next_fire_at)
            armed += 1
        return armed

    async def resync(self) -> None:
        """Re-arm every timer from the table (after the clock jumped)."""
        for reminder_id in list(self._armed):
            self._disarm(reminder_id)
        await self.refill()

    async def _periodic_refill(self) -> None:
        try:
            await self._recover_claims(self._clock.now() - self.config.stale_claim_after)
            await self.refill()
        except Exception as exc:  # noqa: BLE001 - the next refill tries again
            self._on_error(exc, "reminders:refill")

    def _job_failed(self, event: JobExecutionEvent) -> None:
        if event.exception is not None:
            self._on_error(event.exception, f"scheduler job {event.job_id}")

    # --- delivery ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            reminder_id, revision = await self._queue.get()
            if (reminder_id, revision) == _STOP:
                return
            try:
                await self._deliver(reminder_id, revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad reminder must not stop delivery
                self._forget(reminder_id, revision)
                self._on_error(exc, f"reminder {reminder_id}")

    def _forget(self, reminder_id: int, revision: int) -> None:
        """The timer armed for this revision has done its work."""
        if self._armed.get(reminder_id) == revision:
            del self._armed[reminder_id]

    async def _deliver(self, reminder_id: int, revision: int) -> None:
        now = self._clock.now()
        claimed = await self._repo.claim(reminder_id, revision, now)
        if claimed is None:
            self._forget(reminder_id, revision)
            return  # cancelled, snoozed or rescheduled since the timer was armed
        record = claimed.record
        next_at = next_firing(record, max(now, claimed.due_at))
        due = self._due_reminder(claimed, now, next_at)
        # The permit comes right before the send, after the claim: database
        # latency varies, and paced permits followed by uneven claims bunched
        # the sends into 429s. The price: a crash can lose the few claimed
        # rows waiting here (at most `workers`, for at most workers/rate s).
        await self._pacer.acquire()
        try:
            await self._notifier.deliver(due)
        except RecipientBlocked as exc:
            self.blocked += 1
            paused = await self._repo.pause_chat(record.chat_id, self._clock.now())
            for paused_id in paused:
                self.untrack(paused_id)
            log.warning("chat %s does not take messages (%s): paused %d reminder(s)", record.chat_id, exc, len(paused))
            return
        except Exception as exc:  # noqa: BLE001 - a notifier bug counts as a failed send
            if not isinstance(exc, DeliveryFailed):
                self._on_error(exc, f"notifier for reminder {reminder_id}")
            await self._retry_or_give_up(claimed, next_at, exc)
            return
        self.delivered += 1
        self.lateness.append((self._clock.now() - claimed.due_at).total_seconds())
        self._outcomes[reminder_id] = (revision, claimed.claimed_at, next_at)
        self._outcomes_ready.set()

    async def _record_outcomes(self) -> None:
        while self._running or self._outcomes:
            await self._outcomes_ready.wait()
            try:
                await self._flush_outcomes()
            except Exception as exc:  # noqa: BLE001 - kept for the next flush; rows stay claimed meanwhile
                self._on_error(exc, "recording reminder deliveries")
                if not self._running:
                    return
                await asyncio.sleep(1.0)

    async def _flush_outcomes(self) -> None:
        """Write every outcome gathered so far in one transaction (more gather meanwhile)."""
        self._outcomes_ready.clear()
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, {}
        try:
            firings = {i: (claimed_at, nxt) for i, (_, claimed_at, nxt) in batch.items()}
            updated = await self._repo.delivered_many(firings, self._clock.now())
        except BaseException:
            self._outcomes = {**batch, **self._outcomes}
            self._outcomes_ready.set()
            raise
        for reminder_id, (revision, _, _) in batch.items():
            self._forget(reminder_id, revision)
        for record in updated:
            self.track(record)

    def _due_reminder(self, claimed: Claimed, now: datetime, next_at: datetime | None) -> DueReminder:
        record = claimed.record
        started = self._started_at or now
        late = claimed.due_at < started or now - claimed.due_at > self.config.late_after
        return DueReminder(
            id=record.id, user_id=record.user_id, chat_id=record.chat_id, text=record.text,
            timezone=record.timezone, language=claimed.language, user_name=claimed.user_name,
            due_at=claimed.due_at, late=late,
            rule=Rule.decode(record.rule) if record.rule else None, next_at=next_at, channel=record.channel,
        )

    async def _retry_or_give_up(self, claimed: Claimed, next_at: datetime | None, exc: BaseException) -> None:
        record = claimed.record
        attempts = await self._repo.release(record.id, claimed.claimed_at, self._clock.now(), self.config.max_attempts)
        if attempts == 0:  # another scheduler recorded this firing meanwhile
            self._forget(record.id, record.revision)
            return
        if attempts < self.config.max_attempts:
            delay = self.config.retry_delay * attempts
            log.warning("reminder %s not delivered (%s); retry %d in %.0f s", record.id, exc, attempts, delay)
            if self._running:
                self._arm(record.id, record.revision, self._clock.now() + timedelta(seconds=delay))
            return
        self.failed += 1
        log.error("reminder %s not delivered after %d attempts (%s); giving up on this firing", record.id, attempts, exc)
        updated = await self._repo.gave_up(record.id, claimed.claimed_at, self._clock.now(), next_at)
        self._forget(record.id, record.revision)
        if updated is not None:
            self.track(updated)

    async def _recover_claims(self, claimed_before: datetime) -> None:
        """Rows claimed but never recorded: the process died between handing
        them to the channel and writing the outcome. Record them as delivered."""
        for claimed in await self._repo.stale_claims(claimed_before):
            record = claimed.record
            log.warning(
                "reminder %s was being delivered when the bot stopped; recording it as delivered, not resending",
                record.id,
            )
            now = self._clock.now()
            updated = await self._repo.delivered(
                record.id, claimed.claimed_at, now, next_firing(record, max(now, claimed.due_at))
            )
            if updated is not None:
                self.track(updated)

    # --- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        ordered = sorted(self.lateness)

        def pct(p: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None

        return {
            "running": self._running,
            "armed": len(self._armed),
            "queued": self._queue.qsize(),
            "jobs": len(self._aps.get_jobs()) if self._aps.running else 0,
            "delivered": self.delivered,
            "failed": self.failed,
            "blocked": self.blocked,
            "lateness_p50_s": pct(0.50),
            "lateness_p99_s": pct(0.99),
            "pacer_backlog_s": round(self._pacer.backlog_seconds, 3),
            "last_refill_at": self.last_refill_at.isoformat() if self.last_refill_at else None,
        }

    def reset_lateness(self) -> None:
        self.lateness.clear()

