"""Restore (``python -m bot restore <backup>``): put a backup made by
bot.admin.backup in place of the current data.

It refuses while the bot runs (the pid file that scripts/start.sh writes,
or the status file the running bot rewrites), checks the backup first
(PRAGMA integrity_check, a schema revision this code knows), moves the
current database, memory indexes and user files aside as
``<name>.replaced-<time>`` (never deleting them), copies the backup in, and
applies the migrations the backup is older than. A refusal changes nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bot.admin.backup import (
    DB_FILE,
    NAME_FORMAT,
    BackupConfig,
    BackupError,
    connect_existing,
    fsync_file,
    schema_revisions,
    copy_files,
    exclusive,
    list_backups,
    sqlite_path,
)

log = logging.getLogger(__name__)


class RestoreRefused(BackupError):
    """Restore will not start (bot running, bad backup, ...); nothing was changed."""


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    database: Path
    revision: str  # the backup's schema revision
    migrated_to: str | None  # the head it was upgraded to, None if it was current
    set_aside: tuple[Path, ...] = field(default_factory=tuple)
    index_files: int = 0
    user_files: int | None = None  # None: the backup had no files/, current files kept


def verify_backup_database(path: Path) -> str:
    """The schema revision of a database file that passes PRAGMA
    integrity_check and that this code can migrate; else RestoreRefused."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from bot.storage.db import alembic_config

    try:
        connection = connect_existing(path, read_only=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            revisions = schema_revisions(connection)
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        if "malformed" in str(exc):  # a database, but truncated or with broken pages
            raise RestoreRefused(f"{path} is damaged ({exc}); nothing was changed") from None
        raise RestoreRefused(f"{path} is not a valid SQLite database ({exc}); nothing was changed") from None
    if problems != ["ok"]:
        raise RestoreRefused(f"{path} is damaged ({'; '.join(problems[:3])}); nothing was changed")
    if not revisions:
        raise RestoreRefused(
            f"{path} has no schema version (no alembic_version table), so it is not an Arium database; nothing was changed"
        )
    script = ScriptDirectory.from_config(alembic_config())
    for revision in revisions:
        try:
            known = script.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            raise RestoreRefused(
                f"{path} has schema revision {revision!r}, which this version of Arium does not know "
                "(made by a newer version?); update the code first; nothing was changed"
            )
    return ",".join(revisions)


# Restore -------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, run by another user
    return True


def _looks_like_the_bot(pid: int) -> bool:
    try:
        return b"bot" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)  # no /proc: assume it is
    except OSError:
        return True


def running_bot_pid(data_dir: Path) -> int | None:
    """The pid of a bot running on ``data_dir``: from the pid file that
    scripts/start.sh writes (checked as start.sh checks it), or from the
    status file the running bot rewrites every 15 s."""
    from bot.runtime.status import read_status

    try:
        pid = int((data_dir / "arium.pid").read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid > 0 and _pid_alive(pid) and _looks_like_the_bot(pid):
        return pid
    status = read_status(data_dir)
    if status is not None:
        try:
            pid = int(status.get("pid", 0))
        except (TypeError, ValueError):
            pid = 0
        if pid > 0 and _pid_alive(pid):
            return pid
    return None


def find_backup(backups_dir: Path, name: str) -> tuple[Path, Path]:
    """(the backup directory or file, its database file) for a backup name
    under ``backups_dir``, a backup directory, or a database file."""
    given = Path(name).expanduser()
    candidate = given if given.exists() else backups_dir / name
    if candidate.is_dir():
        database = candidate / DB_FILE
        if not database.is_file():
            raise RestoreRefused(
                f"{candidate} has no {DB_FILE} (a backup made with PostgreSQL? restore that database "
                "with pg_restore or psql); nothing was changed"
            )
        return candidate, database
    if candidate.is_file():
        return candidate, candidate
    available = ", ".join(p.name for p in list_backups(backups_dir)[-5:]) or "none"
    raise RestoreRefused(f"no backup {name!r} (the latest in {backups_dir}: {available}); nothing was changed")


def _set_aside(path: Path, stamp: str) -> Path | None:
    """Rename ``path`` (and a SQLite file's -wal/-shm) to ``<name>.replaced-<stamp>``."""
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    number = 1
    while aside.exists():  # a second restore within the same second: never overwrite the first
        number += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{number}")
    for suffix in ("-wal", "-shm"):
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            os.rename(companion, Path(f"{aside}{suffix}"))
    os.rename(path, aside)
    return aside


async def restore(config: BackupConfig, name: str, now: Callable[[], datetime] | None = None) -> RestoreResult:
    """Put backup ``name`` in place of the current data; see the module docstring."""
    target = sqlite_path(config.database_url)
    if target is None:
        raise RestoreRefused(
            "DATABASE_URL is PostgreSQL: restore that database with pg_restore or psql; "
            "this command restores SQLite backups only; nothing was changed"
        )
    pid = running_bot_pid(config.data_dir)
    if pid is not None:
        raise RestoreRefused(f"the bot is running (pid {pid}); stop it first (scripts/stop.sh); nothing was changed")
    source, database = find_backup(config.backups_dir, name)
    revision = await asyncio.to_thread(verify_backup_database, database)
    stamp = (now or (lambda: datetime.now(timezone.utc)))().strftime(NAME_FORMAT)
    with exclusive(config.backups_dir):
        result = await asyncio.to_thread(_swap_in, config, source, database, target, stamp, revision)
    migrated_to = await _migrate(target)
    return RestoreResult(
        source=result.source, database=result.database, revision=revision,
        migrated_to=migrated_to, set_aside=result.set_aside,
        index_files=result.index_files, user_files=result.user_files,
    )


def _swap_in(config: BackupConfig, source: Path, database: Path, target: Path, stamp: str, revision: str) -> RestoreResult:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy next to the target first: the swap below is then two renames.
    incoming = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(database, incoming)
    fsync_file(incoming)
    aside: list[Path] = []
    try:
        moved = _set_aside(target, stamp)
        aside += [moved] if moved else []
        os.replace(incoming, target)
    except BaseException:
        incoming.unlink(missing_ok=True)
        raise
    index_files = 0
    # Indexes: the backup's, or none (rebuilt from the database on first use).
    moved = _set_aside(config.data_dir / "memory", stamp)
    aside += [moved] if moved else []
    if source.is_dir():
        index_files = copy_files(source / "memory", config.data_dir / "memory", suffix=".faiss", skip_hidden=True)
    user_files: int | None = None
    if source.is_dir() and (source / "files").is_dir():
        moved = _set_aside(config.data_dir / "files", stamp)
        aside += [moved] if moved else []
        user_files = copy_files(source / "files", config.data_dir / "files")
    log.info("restored %s (revision %s); set aside: %s", source, revision, ", ".join(map(str, aside)) or "nothing")
    return RestoreResult(source, target, revision, None, tuple(aside), index_files, user_files)


async def _migrate(database: Path) -> str | None:
    """Apply migrations newer than the restored schema, as the bot does at
    start; the new head, or None."""
    from bot.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{database}")
    try:
        pending = await db.pending_migrations()
        if pending:
            await db.migrate()
    finally:
        await db.dispose()
    return pending[0] if pending else None


def describe_restore(result: RestoreResult) -> str:
    lines = [f"restored {result.source} into {result.database} (schema {result.revision})"]
    if result.migrated_to:
        lines.append(f"the backup was older: migrated to {result.migrated_to}")
    lines.append(f"memory indexes: {result.index_files} restored; the rest are rebuilt from the database on first use")
    if result.user_files is None:
        lines.append("user files: the backup has none, the current ones were kept")
    else:
        lines.append(f"user files: {result.user_files} restored")
    for path in result.set_aside:
        lines.append(f"kept aside (delete it when you no longer need it): {path}")
    return "\n".join(lines)


