"""What /health shows, channel-agnostic: uptime, version, database size,
memory use, queue depths, the last error and the model chain's state.

``ErrorLog`` keeps the last few errors that reached an error handler (the
task tracker's and the channel's), each as a time and one scrubbed line:
the exception class and the first line of its message, with known secrets,
bot tokens and URL credentials or queries removed. It lives in memory only;
the full tracebacks are in the log."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from bot import __version__
from bot.admin.stats import ModelHealth, Redactor
from bot.storage.db import Database
from bot.storage.models import utcnow
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)

ERROR_LOG_SIZE = 20
SUMMARY_CHARS = 200


@dataclass(frozen=True)
class ErrorEntry:
    at: datetime
    where: str  # "task <name>", "update", ...
    summary: str  # "<ExceptionClass>: <first line of the message>", scrubbed


class ErrorLog:
    """The most recent errors, newest last; safe to show to admins."""

    def __init__(self, secrets: Sequence[str] = (), size: int = ERROR_LOG_SIZE) -> None:
        self._redact = Redactor(secrets)
        self._entries: deque[ErrorEntry] = deque(maxlen=size)
        self.total = 0  # errors recorded since the start

    def record(self, exc: BaseException, where: str) -> ErrorEntry:
        entry = ErrorEntry(utcnow(), self._redact(where)[:80], self.summarize(exc))
        self._entries.append(entry)
        self.total += 1
        return entry

    def summarize(self, exc: BaseException) -> str:
        first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        summary = type(exc).__name__ + (f": {first_line}" if first_line else "")
        summary = self._redact(summary)
        return summary if len(summary) <= SUMMARY_CHARS else summary[: SUMMARY_CHARS - 1] + "…"

    def task_failed(self, exc: BaseException, name: str) -> None:
        """TaskTracker's error handler: log with the traceback, and remember."""
        log.error("background task %s failed", name, exc_info=exc)
        self.record(exc, f"task {name}")

    @property
    def last(self) -> ErrorEntry | None:
        return self._entries[-1] if self._entries else None

    def recent(self) -> list[ErrorEntry]:
        return list(self._entries)


# Measurements -------------------------------------------------------------------


def sqlite_files(url: str) -> list[Path]:
    """The database file and its WAL (in WAL mode most recent writes live there)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    path = Path(database)
    return [path, path.with_name(path.name + "-wal")]


async def database_size(db: Database) -> int | None:
    """Bytes on disk: SQLite file plus WAL; PostgreSQL's pg_database_size. None if unknown."""
    if db.dialect == "sqlite":
        sizes = [p.stat().st_size for p in sqlite_files(db.url) if p.exists()]
        return sum(sizes) if sizes else None
    if db.dialect == "postgresql":
        async with db.reading() as s:
            value = (await s.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
        return int(value)
    return None


@dataclass(frozen=True)
class MemoryUse:
    bytes: int
    peak: bool  # True: only the peak was available (no /proc), not the current use


def memory_use(status_file: Path = Path("/proc/self/status")) -> MemoryUse | None:
    """Resident memory: VmRSS from /proc on Linux, else the peak from getrusage."""
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return MemoryUse(int(line.split()[1]) * 1024, peak=False)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if peak <= 0:
        return None
    # Linux reports kilobytes, macOS bytes.
    return MemoryUse(peak if sys.platform == "darwin" else peak * 1024, peak=True)


# The report ---------------------------------------------------------------------


class ToolQueue(Protocol):
    """What /health reads of the tool executor (bot.tools.executor.ToolExecutor)."""

    capacity: int

    @property
    def admitted(self) -> int: ...


@dataclass(frozen=True)
class QueueDepths:
    background_tasks: int  # tracked tasks running (memory extraction, alerts, ...)
    tool_calls: int  # sync tool calls running or waiting for a worker
    tool_capacity: int
    updates_waiting: int | None  # fetched from the channel, not yet dispatched
    updates_in_progress: int | None


@dataclass(frozen=True)
class HealthReport:
    generated_at: datetime
    version: str
    uptime: float  # seconds
    database: str  # "sqlite" | "postgresql"
    database_bytes: int | None
    memory: MemoryUse | None
    queues: QueueDepths
    last_error: ErrorEntry | None
    errors_total: int
    breakers: dict[str, int]  # breaker state -> endpoints in it
    endpoints: int


class HealthMonitor:
    def __init__(
        self,
        db: Database,
        *,
        tasks: TaskTracker,
        tools: ToolQueue,
        errors: ErrorLog,
        models: ModelHealth,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._tools = tools
        self._errors = errors
        self._models = models
        self._clock = clock
        self._started = clock()

    async def report(self, *, updates_waiting: int | None = None, updates_in_progress: int | None = None) -> HealthReport:
        """The channel adds what only it knows: its own update queues."""
        try:
            size = await database_size(self._db)
        except Exception as exc:  # noqa: BLE001 - a failing size query must not hide the rest of /health
            log.warning("could not measure the database: %s", type(exc).__name__)
            size = None
        endpoints = self._models.health()
        return HealthReport(
            generated_at=utcnow(),
            version=__version__,
            uptime=max(0.0, self._clock() - self._started),
            database=self._db.dialect,
            database_bytes=size,
            memory=memory_use(),
            queues=QueueDepths(
                background_tasks=self._tasks.pending,
                tool_calls=self._tools.admitted,
                tool_capacity=self._tools.capacity,
                updates_waiting=updates_waiting,
                updates_in_progress=updates_in_progress,
            ),
            last_error=self._errors.last,
            errors_total=self._errors.total,
            breakers=dict(Counter(str(e.get("breaker", "?")) for e in endpoints)),
            endpoints=len(endpoints),
        )
