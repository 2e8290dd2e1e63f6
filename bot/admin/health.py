"""What /health shows, channel-agnostic: uptime, version, database size,
memory use, queue depths, the last error and the model chain's state.

The last error comes from the one error reporter (bot/runtime/errorlog.py): a time
and one masked line; the full tracebacks are in the log."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from bot import __version__
from bot.admin.stats import ModelHealth
from bot.runtime.errorlog import ErrorEntry, ErrorLog
from bot.storage.db import Database
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker
from bot.memory.embedder import EmbedderState

if TYPE_CHECKING:
    from bot.scale.state import ScaledState
    from bot.tools.mcp.views import ServerView
    from bot.recovery import RecoveryReport

log = logging.getLogger(__name__)



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
    recovered: RecoveryReport | None = None  # turns a crash cut short, finished at start
    embedder: EmbedderState | None = None  # the memory's embedding model
    mcp_servers: tuple[ServerView, ...] = ()  # MCP tool servers, in configuration order
    scaled: ScaledState | None = None  # a worker of the scaled mode: the broker's partitions, the leader


class HealthMonitor:
    def __init__(
        self,
        db: Database,
        *,
        tasks: TaskTracker,
        tools: ToolQueue,
        errors: ErrorLog,
        models: ModelHealth,
        recovered: Callable[[], RecoveryReport | None] = lambda: None,
        embedder: Callable[[], EmbedderState | None] = lambda: None,
        mcp_servers: Callable[[], list[ServerView]] = list,
        scaled: Callable[[], Awaitable[ScaledState | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._scaled = scaled
        self._recovered = recovered
        self._embedder = embedder
        self._mcp_servers = mcp_servers
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
            errors_total=self._errors.count,
            breakers=dict(Counter(str(e.get("breaker", "?")) for e in endpoints)),
            endpoints=len(endpoints),
            recovered=self._recovered(),
            embedder=self._embedder(),
            mcp_servers=tuple(self._mcp_servers()),
            scaled=await self._scaled() if self._scaled is not None else None,
        )
