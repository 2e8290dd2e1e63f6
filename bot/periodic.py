"""Periodic system tasks on the same APScheduler as the reminders: pruning
old data, the nightly backup hook, and a daily scheduler health check.

Each task runs behind an overlap guard (a run that finds the previous one
still going is skipped and logged, not stacked), and a failure goes to the
error handler instead of disappearing into APScheduler's log."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.reminders.clock import Clock
from bot.reminders.scheduler import ReminderScheduler
from bot.storage.reminders import ReminderRepository
from bot.runtime.tasks import ErrorHandler

log = logging.getLogger(__name__)

BackupHook = Callable[[], Awaitable[object]]


async def no_backup() -> None:
    """The nightly backup when none is wired in (Arium wires BackupService.run)."""
    log.info("nightly backup: no backup hook is configured; nothing to do")


@dataclass(frozen=True)
class TaskRun:
    """What one guarded run did."""

    ran: bool  # False: the previous run was still going, so this one was refused
    result: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None


@dataclass
class GuardedTask:
    """One periodic task and what it did lately."""

    name: str
    run: Callable[[], Awaitable[object]]
    running: bool = False
    runs: int = 0
    skipped: int = 0
    failures: int = 0
    last_result: object = None
    last_error: str | None = None
    last_finished_at: datetime | None = field(default=None)


@dataclass(frozen=True)
class RetentionConfig:
    reminder_days: int = 30  # finished reminders (fired, done, cancelled, failed); 0 keeps them
    message_days: int = 0  # conversation messages; 0 keeps them forever


class PeriodicTasks:
    def __init__(self, scheduler: AsyncIOScheduler, clock: Clock, on_error: ErrorHandler) -> None:
        self._aps = scheduler
        self._clock = clock
        self._on_error = on_error
        self.tasks: dict[str, GuardedTask] = {}

    def add(self, name: str, run: Callable[[], Awaitable[object]], trigger: CronTrigger) -> None:
        self.tasks[name] = GuardedTask(name, run)
        self._aps.add_job(
            self.run_now, trigger, args=(name,), id=f"system:{name}",
            replace_existing=True, coalesce=True, misfire_grace_time=3600,
            # Our guard skips overlaps itself (and counts them), so APScheduler
            # must not refuse the call first.
            max_instances=2,
        )

    async def run_now(self, name: str) -> bool:
        """Run a task unless its previous run is still going; True if it ran and succeeded."""
        return (await self.run_guarded(name)).ok

    async def run_guarded(self, name: str, *, report: bool = True) -> TaskRun:
        """Run a task behind its overlap guard (the scheduler and admin
        commands share it, so a nightly run and /backup never overlap).
        ``report=False``: a failure is returned, not sent to the error
        handler (the caller tells whoever asked)."""
        task = self.tasks[name]
        if task.running:
            task.skipped += 1
            log.warning("periodic task %s is still running from last time; skipping this run", name)
            return TaskRun(ran=False)
        task.running = True
        try:
            task.last_result = await task.run()
            task.last_error = None
            return TaskRun(ran=True, result=task.last_result)
        except Exception as exc:  # noqa: BLE001 - reported, and the next run tries again
            task.failures += 1
            task.last_error = f"{type(exc).__name__}: {exc}"
            if report:
                self._on_error(exc, f"periodic task {name}")
            return TaskRun(ran=True, error=exc)
        finally:
            task.runs += 1
            task.running = False
            task.last_finished_at = self._clock.now()

    def summary(self) -> dict[str, dict[str, object]]:
        return {
            name: {"runs": t.runs, "skipped": t.skipped, "failures": t.failures, "last_error": t.last_error}
            for name, t in self.tasks.items()
        }


def daily_at(at: time, timezone: str) -> CronTrigger:
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=timezone)


class SystemJobs:
    """The built-in periodic tasks; ``backup`` can be replaced before start."""

    def __init__(
        self,
        periodic: PeriodicTasks,
        repo: ReminderRepository,
        reminders: ReminderScheduler,
        clock: Clock,
        retention: RetentionConfig,
        backup: BackupHook = no_backup,
    ) -> None:
        self._periodic = periodic
        self._repo = repo
        self._reminders = reminders
        self._clock = clock
        self._retention = retention
        self.backup = backup

    def schedule(self, *, timezone: str, prune_at: time, backup_at: time, health_at: time) -> None:
        self._periodic.add("prune", self.prune, daily_at(prune_at, timezone))
        self._periodic.add("backup", self.run_backup, daily_at(backup_at, timezone))
        self._periodic.add("health", self.health, daily_at(health_at, timezone))

    async def prune(self) -> dict[str, int]:
        now = self._clock.now()
        pruned = {"reminders": 0, "messages": 0}
        if self._retention.reminder_days > 0:
            pruned["reminders"] = await self._repo.prune_finished(now - timedelta(days=self._retention.reminder_days))
        if self._retention.message_days > 0:
            pruned["messages"] = await self._repo.prune_messages(now - timedelta(days=self._retention.message_days))
        log.info("pruned old data: %s", pruned)
        return pruned

    async def run_backup(self) -> object:
        return await self.backup()

    async def health(self) -> dict[str, object]:
        now = self._clock.now()
        report: dict[str, object] = dict(self._reminders.health())
        report["stored"] = await self._repo.counts(overdue_before=now - timedelta(minutes=5))
        report["tasks"] = self._periodic.summary()
        overdue = report["stored"]["overdue"]  # type: ignore[index]
        level = logging.WARNING if overdue or not report["running"] else logging.INFO
        log.log(level, "scheduler health: %s", report)
        self._reminders.reset_lateness()
        return report
