"""The async engine, sessions, and migrations applied at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.errors import ConfigError, StorageError
from bot.storage import sqlite_driver

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run while a writer commits; busy_timeout makes a second
    # writer wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def build_engine(url: str, pool_size: int = 20, worker_cpus: frozenset[int] | None = None) -> AsyncEngine:
    """``worker_cpus``: CPUs for SQLite's worker threads (bot/runtime/cpus.py); no
    effect on PostgreSQL, whose work happens in the server."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if parsed.drivername == "sqlite+aiosqlite":
            # Same aiosqlite thread, one hop per statement (see sqlite_driver).
            sqlite_driver.register()
            parsed = parsed.set(drivername=sqlite_driver.DRIVER_NAME)
        connect_args: dict[str, object] = {"timeout": 10}
        if worker_cpus is not None and parsed.drivername == sqlite_driver.DRIVER_NAME:
            connect_args["worker_cpus"] = worker_cpus
        engine = create_async_engine(parsed, connect_args=connect_args)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Sized for many chats at once; sessions are short, so the pool rarely fills.
    # At most 2 x pool_size connections: several processes (the scaled mode's
    # workers) must stay under the server's max_connections together.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class Database:
    """Owns the engine and hands out one session per unit of work."""

    def __init__(self, url: str, *, worker_cpus: frozenset[int] | None = None, pool_size: int = 20) -> None:
        self.url = url
        self.engine = build_engine(url, pool_size=pool_size, worker_cpus=worker_cpus)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Many connections racing for the lock
        # wait in SQLite's busy handler (sleeps of up to 100 ms, then "database
        # is locked"); queueing writers here instead keeps each write short.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed on success, rolled back on error."""
        async with self._writers(), self._transaction() as session:
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A transaction that only reads (SQLite WAL readers never wait for the writer)."""
        async with self._transaction() as session:
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on a plain connection, for Core statements
        built once: a turn's own writes. A turn's calls take a third to a
        half of the CPU they took through an ORM session, whose bookkeeping
        cost more than such statements (BENCHMARKS.md, "P2: a turn's SQL")."""
        async with self._writers(), self._connection(write=True) as conn:
            yield conn

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[AsyncConnection]:
        """``reading()`` on a plain connection, for Core statements built once."""
        async with self._connection(write=False) as conn:
            yield conn

    def _writers(self) -> AbstractAsyncContextManager[Any]:
        """The queue a writer waits in: SQLite's lock; none for PostgreSQL."""
        return self._write_lock if self._write_lock is not None else nullcontext()

    @asynccontextmanager
    async def _connection(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        with _as_storage_errors():
            async with self.engine.begin() if write else self.engine.connect() as conn:
                yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            with _as_storage_errors():
                async with session.begin():
                    yield session

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Workers of the scaled mode start together: one migrates, the
                # others wait here and then find the schema at head.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            await conn.run_sync(_upgrade_to_head)

    async def pending_migrations(self) -> list[str]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_pending_revisions)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


@contextmanager
def _as_storage_errors() -> Iterator[None]:
    """SQLAlchemy's errors as ours, at the storage boundary."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc


# An advisory lock key of its own (PostgreSQL): "arium:migrate" as 8 bytes.
MIGRATION_LOCK = int.from_bytes(b"arium:mi", "big") >> 1


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        # migrations/env.py uses this connection instead of making its own.
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _pending_revisions(connection: Connection) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    current = set(MigrationContext.configure(connection).get_current_heads())
    pending: list[str] = []
    for rev in script.walk_revisions():
        if rev.revision in current:
            break
        pending.append(rev.revision)
    return pending if current != set(script.get_heads()) else []


ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def check_database_url(url: str) -> None:
    """A URL SQLAlchemy can read, of a database we support, with its async
    driver; ConfigError naming the fix otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    backend, driver = parsed.get_backend_name(), parsed.drivername
    expected = ASYNC_DRIVERS.get(backend)
    if expected is None:
        raise ConfigError(f"DATABASE_URL: unsupported database {backend!r} (use SQLite or PostgreSQL)")
    if driver != expected:
        raise ConfigError(f"DATABASE_URL must use the async driver: write '{expected}://...' instead of '{driver}://...'")


def insert_for(session: AsyncSession) -> Callable[..., Any]:
    """The session's dialect's INSERT, which has ON CONFLICT (SQLite's and
    PostgreSQL's take the same arguments): upserts and insert-or-ignore."""
    return dialect_insert(session.bind.dialect.name if session.bind else "sqlite")


def dialect_insert(dialect: str) -> Callable[..., Any]:
    """``insert_for`` by the dialect's name (``Database.dialect``), for statements built once."""
    return pg_insert if dialect == "postgresql" else sqlite_insert
