"""One scheduler leader among any number of worker processes.

Every worker keeps one dedicated connection to PostgreSQL and tries a
session-level advisory lock on it every ``interval`` seconds; the one that gets
it leads (``on_elected``) until it stops or its connection goes, and then it
stops scheduling at once (``on_deposed``). PostgreSQL ends the lock with the
session, so a leader killed with SIGKILL, or whose machine vanished, frees it
without any help from the leader.

Why asyncpg directly rather than a SQLAlchemy engine: the lock belongs to one
server session, and a pool owns its connections' lifetimes. A pool may hand
the connection back, ping and replace it, or reset it on return (asyncpg's
reset and ``DISCARD ALL`` both release advisory locks), each of which would
silently end the leadership while we still believe we lead. One bare
connection that only this class opens, checks and closes has none of that,
and asyncpg tells us the moment its socket closes (a termination listener).
For the same reason the URL must reach PostgreSQL itself: a PgBouncer in
transaction mode breaks session-level locks.

Timing (defaults): a leader whose connection stops answering steps down
after at most ``interval + check_timeout`` = 4 s. The server notices a
vanished peer by TCP keepalives set on this session (idle 4 s, then 3 probes
1 s apart: about 7 s), so a silent leader has stepped down before its lock is
freed, and a waiting worker, trying every 2 s, takes over within about 9 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg
from sqlalchemy.engine.url import make_url

from bot.errors import ConfigError, StorageError
from bot.runtime.tasks import TaskTracker
from bot.storage.db import check_database_url

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]

LOCK_NAME = "arium.scheduler"
APPLICATION_PREFIX = "arium-leader "
_APPLICATION_NAME_MAX = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)

# The server side of the dead-peer detection described in the module docstring;
# these are per-session settings any role may set.
_SERVER_SETTINGS = {
    "tcp_keepalives_idle": "4",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "7000",  # ms; also ends a session whose sent data is never acknowledged
}
_CONNECT_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0

# What a lost or unreachable database raises; anything else is a bug and is reported.
_CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_HOLDER_QUERY = """
SELECT a.application_name, l.pid
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = $1::oid AND l.objid = $2::oid
LIMIT 1
"""


def require_postgres(url: str) -> None:
    """The scaled mode shares all state between processes: SQLite (one file on
    one machine) cannot. ConfigError with the fix otherwise."""
    check_database_url(url)  # malformed URLs and sync drivers get their own message
    if make_url(url).get_backend_name() != "postgresql":
        raise ConfigError(
            "the scaled mode (gateway, worker) needs PostgreSQL: set DATABASE_URL=postgresql+asyncpg://..."
        )


def lock_key(namespace: str = "", name: str = LOCK_NAME) -> int:
    """A stable signed 64-bit key (pg_try_advisory_lock takes a bigint). The
    namespace keeps two bots that share a database from blocking each other;
    blake2b rather than hash(), which differs between processes."""
    digest = hashlib.blake2b(f"{namespace}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _key_halves(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as two unsigned 32-bit oids."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def _connect_args(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    args: dict[str, Any] = parsed.translate_connect_args(username="user")
    if "ssl" in parsed.query:
        args["ssl"] = parsed.query["ssl"]
    return args


class LeaderElection:
    """``start()`` begins campaigning; ``on_elected`` and ``on_deposed``
    alternate strictly and never overlap, so the owner can start and stop its
    schedulers in them without locks of its own."""

    def __init__(
        self,
        database_url: str,
        *,
        tasks: TaskTracker,
        on_elected: Callback,
        on_deposed: Callback,
        namespace: str = "",
        interval: float = 2.0,
        check_timeout: float | None = None,
        identity: str | None = None,
    ) -> None:
        require_postgres(database_url)
        self._connect_args = _connect_args(database_url)
        self._tasks = tasks
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.key = lock_key(namespace)
        self.interval = interval
        # A check slower than this counts as a lost connection: see the module docstring.
        self.check_timeout = interval if check_timeout is None else check_timeout
        self.identity = identity or default_identity()
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()  # one query at a time on the dedicated connection
        self._leading = False
        self._leading_since: datetime | None = None
        self._stopping = False
        self._wake = asyncio.Event()  # stop() or a closed connection cut the pause short
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._unreachable = False

    # --- what others read ---------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def leading_since(self) -> datetime | None:
        return self._leading_since

    @property
    def campaigning(self) -> bool:
        """Started and not stopped."""
        return self._task is not None and not self._stopping

    @property
    def rounds(self) -> int:
        """Completed rounds of the loop (one lock attempt or one check each)."""
        return self._rounds

    @property
    def application_name(self) -> str:
        return (APPLICATION_PREFIX + self.identity)[:_APPLICATION_NAME_MAX]

    async def current_leader(self) -> str | None:
        """The leader's identity as any worker sees it (None: nobody leads),
        read from the lock holder's application_name."""
        try:
            return await self._read_leader()
        except _CONNECTION_ERRORS as exc:
            raise StorageError(f"could not read the scheduler leader: {exc.__class__.__name__}: {exc}") from exc

    async def members(self, prefix: str = "") -> list[str]:
        """The identities of every campaigning process (each keeps its
        dedicated connection open, named after it), whose identity starts
        with ``prefix``: the live workers, as PostgreSQL sees them. A worker
        that died has no connection, so it is gone from the list at once."""
        async with self._conn_lock:
            conn = self._conn if self._conn is not None and not self._conn.is_closed() else None
            if conn is not None:
                return await _members(conn, prefix)
        conn = await asyncpg.connect(**self._connect_args, timeout=_CONNECT_TIMEOUT)
        try:
            return await _members(conn, prefix)
        finally:
            await conn.close(timeout=_CLOSE_TIMEOUT)

    async def _read_leader(self) -> str | None:
        async with self._conn_lock:
            if self._conn is not None and not self._conn.is_closed():
                return await self._holder(self._conn)
        conn = await asyncpg.connect(**self._connect_args, timeout=_CONNECT_TIMEOUT)
        try:
            return await self._holder(conn)
        finally:
            await conn.close(timeout=_CLOSE_TIMEOUT)

    async def _holder(self, conn: asyncpg.Connection) -> str | None:
        row = await conn.fetchrow(_HOLDER_QUERY, *_key_halves(self.key), timeout=self.check_timeout)
        if row is None:
            return None
        name = row["application_name"] or ""
        # Someone other than Arium (a manual session, say) can hold the key too.
        return name.removeprefix(APPLICATION_PREFIX) if name.startswith(APPLICATION_PREFIX) else f"backend {row['pid']}"

    def health(self) -> dict[str, Any]:
        return {
            "leader": self._leading,
            "identity": self.identity,
            "leading_since": self._leading_since.isoformat() if self._leading_since else None,
        }

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the leader election is already running")
        self._task = self._tasks.spawn(self._campaign(), name="leader-election")

    async def stop(self, timeout: float = 10.0) -> None:
        """Step down (``on_deposed`` first, then the lock is released, so the
        next leader never overlaps this one) and stop campaigning."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # The round in flight is bounded by timeouts; waiting for it rather
            # than cancelling never leaves a callback cut off halfway.
            _, pending = await asyncio.wait({self._task}, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._task = None
        if self._leading:
            await self._step_down("stopping", level=logging.INFO)
        await self._close()

    # --- the loop -----------------------------------------------------------------------

    async def _campaign(self) -> None:
        try:
            while not self._stopping:
                # Cleared before the round, so a connection closing during it still cuts the pause short.
                self._wake.clear()
                await self._checked_round()
                self._rounds += 1
                await self._pause()
        except asyncio.CancelledError:
            self._drop_now()
            raise

    async def _checked_round(self) -> None:
        try:
            await self._round()
        except Exception as exc:  # noqa: BLE001 - a bug must not leave a leader running unchecked
            self._tasks.report_error(exc, "leader election")
            if self._leading:
                await self._step_down("the election itself failed")
            else:
                await self._close()

    async def _round(self) -> None:
        if self._leading:
            if not await self._alive():
                await self._step_down("lost the connection to PostgreSQL")
        elif await self._acquired():
            await self._take_office()

    async def _pause(self) -> None:
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), self.interval)
        except TimeoutError:
            pass

    async def _acquired(self) -> bool:
        try:
            async with self._conn_lock:
                conn = await self._connection()
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=self.check_timeout)
        except _CONNECTION_ERRORS as exc:
            self._note_unreachable(exc)
            await self._close()
            return False
        self._note_reachable()
        return bool(got)

    async def _alive(self) -> bool:
        # A lock lives as long as its session: an answering session still holds it.
        try:
            async with self._conn_lock:
                if self._conn is None or self._conn.is_closed():
                    return False
                await self._conn.fetchval("SELECT 1", timeout=self.check_timeout)
        except _CONNECTION_ERRORS as exc:
            log.warning("leader %s: the lock's connection failed: %s", self.identity, exc)
            return False
        return True

    async def _take_office(self) -> None:
        # Marked before the callback: if it fails or is cut off, on_deposed still runs to undo it.
        self._leading = True
        self._leading_since = datetime.now(timezone.utc)
        log.info("%s is now the scheduler leader", self.identity)
        if not await self._call(self._on_elected, "on_elected"):
            await self._step_down("on_elected failed")

    async def _step_down(self, reason: str, level: int = logging.WARNING) -> None:
        self._leading = False
        self._leading_since = None
        log.log(level, "%s is no longer the scheduler leader: %s", self.identity, reason)
        try:
            await self._call(self._on_deposed, "on_deposed")
        finally:
            # Only after scheduling stopped: while this session lives nobody else can lead.
            await self._close()

    async def _call(self, callback: Callback, name: str) -> bool:
        try:
            await callback()
        except Exception as exc:  # noqa: BLE001 - the election must outlive a failing scheduler
            self._tasks.report_error(exc, f"leader election {name}")
            return False
        return True

    # --- the dedicated connection -------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                **self._connect_args,
                timeout=_CONNECT_TIMEOUT,
                server_settings={"application_name": self.application_name, **_SERVER_SETTINGS},
            )
            # Wake the loop as soon as the socket closes, not at the next check.
            self._conn.add_termination_listener(lambda _conn: self._wake.set())
        return self._conn

    async def _close(self) -> None:
        async with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await conn.close(timeout=_CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - a dead link: abort it, the server frees the lock itself
            conn.terminate()

    def _drop_now(self) -> None:
        """Cancelled (shutdown without stop()): no awaiting, just cut the link."""
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None

    def _note_unreachable(self, exc: BaseException) -> None:
        # One warning per outage, not one every interval.
        if not self._unreachable:
            log.warning("leader election %s: PostgreSQL is unreachable: %s", self.identity, exc)
        self._unreachable = True

    def _note_reachable(self) -> None:
        if self._unreachable:
            log.info("leader election %s: PostgreSQL answers again", self.identity)
        self._unreachable = False


async def _members(conn: asyncpg.Connection, prefix: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND starts_with(application_name, $1)",
        APPLICATION_PREFIX + prefix,
    )
    return sorted(row["application_name"].removeprefix(APPLICATION_PREFIX) for row in rows)
