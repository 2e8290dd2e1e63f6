"""Backups of everything under BOT_DATA_DIR that a restore needs.

A backup is one directory, ``BOT_DATA_DIR/backups/<YYYYmmdd-HHMMSS>/``:

    arium.db        the SQLite database, copied with SQLite's online backup
                    API (a consistent snapshot while the bot keeps writing;
                    WAL readers never block writers), as one self-contained
                    file (journal mode DELETE, no -wal beside it)
    memory/         the per-user FAISS index files (a cache of the database)
    files/          each user's private files (BOT_BACKUP_FILES)
    manifest.json   when, which version, schema revision, row counts

A directory rather than an archive: restoring or inspecting needs no tool,
and ``sqlite3 backups/<name>/arium.db`` opens it directly. It is written as
``.partial-<name>`` and renamed when complete, so a crash never leaves a
half backup that looks whole. The last BOT_BACKUP_KEEP are kept.

The index files are copied before the database snapshot: a restored index
is then older than the restored rows, and the memory service re-reads rows
changed since an index's snapshot when it loads it (and rebuilds an index
that is missing or damaged), so restored indexes are always made right.

With PostgreSQL the database is the operator's to back up (pg_dump); a
backup then holds the index files and user files and says so.

Restore is bot.admin.restore.

Backups and restores take an exclusive file lock, so two never overlap,
even from two processes (the bot's nightly run and the CLI)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from bot import __version__
from bot.errors import AriumError
from bot.runtime.units import human_size
from bot.settings import Settings

log = logging.getLogger(__name__)

DB_FILE = "arium.db"
MANIFEST = "manifest.json"
PARTIAL = ".partial-"
LOCK_FILE = ".lock"
NAME_FORMAT = "%Y%m%d-%H%M%S"  # UTC
NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")
COUNTED_TABLES = ("users", "messages", "memories", "reminders")
POSTGRES_NOTE = (
    "the database is PostgreSQL, so it is not in this backup: back it up with pg_dump "
    "(see README, Operations); this backup holds the memory indexes and user files"
)


class BackupError(AriumError):
    """A backup or restore could not be done; the message says why."""


class BackupBusy(BackupError):
    """Another backup or restore holds the lock."""


@dataclass(frozen=True)
class BackupConfig:
    data_dir: Path
    database_url: str
    keep: int = 7
    include_files: bool = True

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupConfig:
        return cls(
            data_dir=settings.bot_data_dir.resolve(),
            database_url=settings.effective_database_url,
            keep=settings.bot_backup_keep,
            include_files=settings.bot_backup_files,
        )


@dataclass(frozen=True)
class BackupResult:
    path: Path
    database: Path | None  # None: not included (PostgreSQL)
    database_note: str | None
    revision: str | None
    rows: dict[str, int]
    index_files: int
    user_files: int | None  # None: user files are not backed up (BOT_BACKUP_FILES=false)
    size: int
    duration: float
    kept: int
    pruned: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Written:
    """What went into a backup directory."""

    has_database: bool
    database_note: str | None
    revision: str | None
    rows: dict[str, int]
    index_files: int
    user_files: int | None


def sqlite_path(database_url: str) -> Path | None:
    """The SQLite file behind the URL; None for PostgreSQL."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise BackupError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError("DATABASE_URL is an in-memory SQLite database; there is nothing to back up")
    return Path(url.database).resolve()


# Backups on disk ---------------------------------------------------------


def _sort_key(path: Path) -> tuple[str, int]:
    match = NAME.match(path.name)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def list_backups(backups_dir: Path) -> list[Path]:
    """Complete backups, oldest first."""
    if not backups_dir.is_dir():
        return []
    found = [p for p in backups_dir.iterdir() if NAME.match(p.name) and p.is_dir() and (p / MANIFEST).is_file()]
    return sorted(found, key=_sort_key)


def backup_time(path: Path) -> datetime:
    match = NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a backup name")
    return datetime.strptime(match.group(1), NAME_FORMAT).replace(tzinfo=timezone.utc)


def latest_backup(backups_dir: Path) -> tuple[Path, datetime] | None:
    backups = list_backups(backups_dir)
    return (backups[-1], backup_time(backups[-1])) if backups else None


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@contextmanager
def exclusive(backups_dir: Path) -> Iterator[None]:
    """The backup lock: one backup or restore at a time, across processes."""
    backups_dir.mkdir(parents=True, exist_ok=True)
    with open(backups_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BackupBusy("another backup or restore is running; try again when it has finished") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# SQLite ------------------------------------------------------------------


def connect_existing(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a database file that must exist (never creates one)."""
    mode = "ro" if read_only else "rw"
    return sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, timeout=30)


def schema_revisions(connection: sqlite3.Connection) -> list[str]:
    try:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.OperationalError:
        return []


def _row_counts(connection: sqlite3.Connection) -> dict[str, int]:
    present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names
        for table in COUNTED_TABLES
        if table in present
    }


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_sqlite(source: Path, target: Path) -> tuple[str | None, dict[str, int]]:
    """Snapshot ``source`` into ``target`` with the online backup API; returns
    the schema revision and row counts of the copy. Blocking: run in a thread
    (the sqlite3 module releases the GIL while it copies pages)."""
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    src = connect_existing(source)
    try:
        dst = sqlite3.connect(target)
        try:
            # All pages in one step, so the copy is one read transaction of the
            # source: consistent, and in WAL mode the bot's writers carry on.
            src.backup(dst)
            # One self-contained file, openable read-only, no -wal beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of the database failed its check: {check}")
            revisions = schema_revisions(dst)
            rows = _row_counts(dst)
        finally:
            dst.close()
    finally:
        src.close()
    fsync_file(target)
    return (",".join(revisions) or None), rows


# Files -------------------------------------------------------------------


def copy_files(source: Path, target: Path, *, suffix: str | None = None, skip_hidden: bool = False) -> int:
    """Copy the regular files under ``source``; returns how many. Files that
    vanish while we copy (a user erased them) are skipped; symlinks are never
    followed."""
    if not source.is_dir():
        return 0
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if (skip_hidden and path.name.startswith(".")) or (suffix and path.suffix != suffix):
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, destination)
        except FileNotFoundError:
            continue
        count += 1
    return count


# Backup --------------------------------------------------------------------


class BackupService:
    """Writes backups into BOT_DATA_DIR/backups and keeps the last N."""

    def __init__(self, config: BackupConfig, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.config = config
        self._now = now

    @property
    def backups_dir(self) -> Path:
        return self.config.backups_dir

    async def run(self) -> BackupResult:
        """One backup, off the event loop."""
        return await asyncio.to_thread(self.run_sync)

    def run_sync(self) -> BackupResult:
        started = time.monotonic()
        with exclusive(self.backups_dir):
            self._remove_partials()
            name = self._new_name()
            partial = self.backups_dir / f"{PARTIAL}{name}"
            partial.mkdir()
            try:
                result = self._write(partial)
                os.rename(partial, self.backups_dir / name)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            pruned = self._prune()
        final = self.backups_dir / name
        outcome = BackupResult(
            path=final,
            database=final / DB_FILE if result.has_database else None,
            database_note=result.database_note,
            revision=result.revision,
            rows=result.rows,
            index_files=result.index_files,
            user_files=result.user_files,
            size=tree_size(final),
            duration=time.monotonic() - started,
            kept=len(list_backups(self.backups_dir)),
            pruned=pruned,
        )
        log.info("backup written: %s", describe_backup(outcome))
        return outcome

    def _write(self, target: Path) -> _Written:
        data_dir = self.config.data_dir
        # Indexes before the database: see the module docstring.
        # The folders exist even when empty: "no files then" is restored as such.
        (target / "memory").mkdir()
        index_files = copy_files(data_dir / "memory", target / "memory", suffix=".faiss", skip_hidden=True)
        user_files: int | None = None
        if self.config.include_files:
            (target / "files").mkdir()
            user_files = copy_files(data_dir / "files", target / "files")
        source = sqlite_path(self.config.database_url)
        revision: str | None = None
        rows: dict[str, int] = {}
        note: str | None = None
        if source is None:
            note = POSTGRES_NOTE
            log.warning("backup: %s", note)
        else:
            revision, rows = copy_sqlite(source, target / DB_FILE)
        manifest = {
            "created_at": self._now().isoformat(timespec="seconds"),
            "arium_version": __version__,
            "database": "postgresql (not included: use pg_dump)" if source is None else DB_FILE,
            "revision": revision,
            "rows": rows,
            "index_files": index_files,
            "user_files": user_files,
        }
        (target / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return _Written(source is not None, note, revision, rows, index_files, user_files)

    def _new_name(self) -> str:
        """The time, numbered after any backup of the same second (even a
        pruned one's number is not reused, so names always sort by age)."""
        base = self._now().astimezone(timezone.utc).strftime(NAME_FORMAT)
        same_second = [_sort_key(p)[1] for p in self.backups_dir.iterdir() if NAME.match(p.name) and p.name.startswith(base)]
        if not same_second:
            return base
        return f"{base}-{max(max(same_second), 1) + 1}"

    def _remove_partials(self) -> None:
        """Leftovers of a backup that crashed (we hold the lock: none is running)."""
        for leftover in self.backups_dir.glob(f"{PARTIAL}*"):
            log.warning("removing an incomplete backup left over by a crash: %s", leftover.name)
            shutil.rmtree(leftover, ignore_errors=True)

    def _prune(self) -> tuple[str, ...]:
        backups = list_backups(self.backups_dir)
        old = backups[: max(0, len(backups) - self.config.keep)]
        for path in old:
            shutil.rmtree(path)
        if old:
            log.info("removed old backups (keeping the last %d): %s", self.config.keep, ", ".join(p.name for p in old))
        return tuple(p.name for p in old)


def describe_backup(result: BackupResult) -> str:
    """One paragraph for the CLI and the log."""
    parts = []
    if result.database is not None:
        rows = ", ".join(f"{count} {table}" for table, count in result.rows.items())
        parts.append(f"database {human_size(result.database.stat().st_size)} ({rows})")
    parts.append(f"{result.index_files} memory index file(s)")
    if result.user_files is not None:
        parts.append(f"{result.user_files} user file(s)")
    text = (
        f"{result.path}: {', '.join(parts)}; {human_size(result.size)} in all, "
        f"{result.duration:.1f} s; {result.kept} backup(s) kept"
    )
    if result.database_note:
        text += f". Note: {result.database_note}"
    return text


def backup_age(backups_dir: Path, now: datetime | None = None) -> tuple[Path, timedelta] | None:
    """The newest backup and how old it is (for doctor)."""
    latest = latest_backup(backups_dir)
    if latest is None:
        return None
    path, made = latest
    return path, (now or datetime.now(timezone.utc)) - made
