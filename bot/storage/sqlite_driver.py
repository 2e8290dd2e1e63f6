"""SQLite through aiosqlite with one thread hop per statement.

SQLAlchemy's aiosqlite adapter sends every DBAPI call to aiosqlite's worker
thread on its own: cursor(), execute(), fetchall(), close() for one SELECT,
then commit() and the pool's reset rollback() for each session. Measured on
a chat turn: 51 hops for 10 statements. Each hop wakes the worker thread,
wakes the event loop again through its self-pipe, and hands the GIL back and
forth; on 2 busy cores that was the largest single cost of a turn's main
thread.

This dialect keeps aiosqlite's thread and SQLAlchemy's SQLite dialect and
changes only how work is handed over:

- a statement (execute, fetch every row, read description / rowcount /
  lastrowid, close the cursor) is one function run in the worker thread;
- commit and rollback are skipped when the sqlite3 connection has no open
  transaction (Python's sqlite3 opens one only before a write), so a read
  session costs no extra hop and the pool's reset after a commit is free.

Reading ``in_transaction`` from the event loop's thread is safe here: a
connection is used by one session at a time and SQLAlchemy awaits each call,
so no statement of this connection is running in the worker meanwhile.

Server-side cursors (stream results) keep the stock adapter's behaviour.
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_only

from bot.runtime.cpus import pin_current_thread

DRIVER_NAME = "sqlite+arium_aiosqlite"


@dataclass(frozen=True, slots=True)
class _Outcome:
    rows: list[Any]
    description: Any
    rowcount: int
    lastrowid: int | None


def _run_statement(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    """Runs in aiosqlite's worker thread: the whole statement in one go."""
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return _Outcome(rows, description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


def _run_many(connection: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return _Outcome([], cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


_NOTHING_YET = _Outcome([], None, -1, None)


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement runs in a single worker call."""

    __slots__ = ("_outcome",)

    def __init__(self, adapt_connection: Any) -> None:
        # No sqlite3 cursor is opened here (that alone would be a hop):
        # each statement opens and closes its own inside the worker.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}
        self._rows = collections.deque()
        self._outcome = _NOTHING_YET

    @property
    def description(self) -> Any:
        return self._outcome.description

    @property
    def rowcount(self) -> int:
        return self._outcome.rowcount

    @property
    def lastrowid(self) -> int:
        return self._outcome.lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass  # every row is fetched with the statement

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open between calls

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            outcome = await self._connection._execute(_run_statement, self._connection._conn, operation, parameters)
        self._take(outcome)
        return None

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            outcome = await self._connection._execute(_run_many, self._connection._conn, operation, seq_of_parameters)
        self._take(outcome)
        return None

    def _take(self, outcome: _Outcome) -> None:
        self._outcome = outcome
        self._rows = collections.deque(outcome.rows)

    def nextset(self) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls = OneHopCursor

    def _in_transaction(self) -> bool:
        raw = self._connection._connection
        return raw is not None and raw.in_transaction

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        if self._in_transaction():
            super().rollback()


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, worker_cpus: frozenset[int] | None = None, **kw: Any) -> OneHopConnection:
        """``worker_cpus``: the CPUs this connection's worker thread may run
        on (see bot/runtime/cpus.py); None leaves it anywhere."""
        stock = super().connect(*arg, **kw)
        if worker_cpus is not None:
            await_only(stock._connection._execute(pin_current_thread, worker_cpus))
        return OneHopConnection(self, stock._connection)


class OneHopSQLiteDialect(SQLiteDialect_aiosqlite):
    driver = "arium_aiosqlite"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneHopDbapi:  # type: ignore[override]
        return OneHopDbapi(__import__("aiosqlite"), __import__("sqlite3"))


def register() -> None:
    """Make ``sqlite+arium_aiosqlite://`` URLs resolve to this dialect."""
    registry.register("sqlite.arium_aiosqlite", __name__, "OneHopSQLiteDialect")

