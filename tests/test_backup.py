"""Backups (/backup, the nightly job, `python -m bot backup`) and restore
(`python -m bot restore`), against the real bot, real SQLite and FAISS files."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import pytest

from bot.admin.backup import BackupBusy, BackupConfig, BackupService, exclusive, list_backups
from bot.admin.restore import RestoreRefused, restore
from bot.app import Arium
from bot.doctor import run_doctor
from bot.memory.records import NewMemory
from bot.storage.admin import AuditRecord
from bot.storage.db import Database
from bot.storage.repositories import UserProfile
from tests.conftest import BotFactory, eventually, fake_settings
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT
from tests.support.processes import FAKE_EMBEDDINGS, REPO, clean_env, cli

ADMIN = 555
USER = 1001
def schema_head() -> str:
    from alembic.script import ScriptDirectory

    from bot.storage.db import alembic_config

    [head] = ScriptDirectory.from_config(alembic_config()).get_heads()
    return str(head)


POSTGRES = "postgresql+asyncpg://arium@127.0.0.1:1/none"  # never connected to: the database is pg_dump's job


def rows(db_file: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(f"{db_file.as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def table(db_file: Path, name: str) -> list[tuple[object, ...]]:
    order = {"users": "id", "messages": "id", "memories": "id"}[name]
    columns = {"users": "id, first_name, role", "messages": "id, role, content", "memories": "id, user_id, text"}[name]
    return rows(db_file, f"SELECT {columns} FROM {name} ORDER BY {order}")


def integrity(db_file: Path) -> str:
    return str(rows(db_file, "PRAGMA integrity_check")[0][0])


async def wait_for_file(path: Path, timeout: float = WAIT_LIMIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        assert asyncio.get_running_loop().time() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)


async def seed_memories(app: Arium, user_id: int, *texts: str) -> None:
    """Memories stored, embedded and saved in the user's FAISS index file."""
    await app.users.touch(UserProfile(user_id, "Ann"), "user")
    await app.memory.add(user_id, [NewMemory(text) for text in texts])
    assert await app.memory.embeddings.wait_ready(30)
    await app.memory.search(user_id, texts[0], 3)
    await wait_for_file(app.settings.bot_data_dir.resolve() / "memory" / f"{user_id}.faiss")


async def audited_actions(app: Arium, count: int, timeout: float = WAIT_LIMIT) -> list[AuditRecord]:
    """The audit entries, once ``count`` are stored (published after the reply is sent)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await app.audit_writer.flush()
        entries = await app.audit_log.latest()
        if len(entries) >= count:
            return list(entries)
        assert asyncio.get_running_loop().time() < deadline, "the audit entry never arrived"
        await asyncio.sleep(0.02)


def service(data_dir: Path, keep: int = 7, url: str | None = None) -> BackupService:
    return BackupService(
        BackupConfig(data_dir=data_dir, database_url=url or f"sqlite+aiosqlite:///{data_dir / 'arium.db'}", keep=keep)
    )


async def make_database(data_dir: Path, *names: str) -> Path:
    """A migrated database under ``data_dir`` holding users ``names``."""
    from bot.storage.repositories import UserRepository

    db_file = data_dir / "arium.db"
    db = Database(f"sqlite+aiosqlite:///{db_file}")
    try:
        await db.migrate()
        users = UserRepository(db, "UTC")
        for number, name in enumerate(names, start=1):
            await users.touch(UserProfile(number, name), "user")
    finally:
        await db.dispose()
    return db_file


# --- /backup ---------------------------------------------------------------------


async def test_backup_by_a_non_admin_is_refused_revealing_nothing(
    start_bot: BotFactory, tg: FakeTelegram, tmp_path: Path
) -> None:
    await start_bot(bot_admin_ids=str(ADMIN))
    tg.user_text("/backup", chat_id=USER)
    tg.user_text("/nosuchcommand", chat_id=USER)
    refused, unknown = await tg.wait_messages(USER, 2)
    assert refused.text == unknown.text.replace("/nosuchcommand", "/backup")
    assert "backup" not in refused.text.lower().replace("/backup", "")
    assert list_backups(tmp_path / "data" / "backups") == []


async def test_admin_backup_while_the_bot_runs_holds_the_same_rows(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    model.script(Reply(text="Hello Ann!"), Reply(text="Noted."))
    tg.user_text("hi there", chat_id=USER)
    tg.user_text("I like tea", chat_id=USER)
    await tg.wait_messages(USER, 2)
    await seed_memories(app, USER, "Likes green tea", "Lives in Lisbon")
    tg.user_text("/backup", chat_id=ADMIN)
    [answer] = await tg.wait_messages(ADMIN, 1, timeout=30)

    assert answer.text.startswith("✅ Backup written in"), answer.text
    assert "2 memories" in answer.text and "memory index files: 1" in answer.text
    path = Path(re.search(r"^(/\S+)$", answer.text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    live = tmp_path / "data" / "arium.db"
    backup = path / "arium.db"
    assert integrity(backup) == "ok"
    for name in ("users", "messages", "memories"):
        assert table(backup, name) == table(live, name) and table(backup, name), name
    assert rows(backup, "PRAGMA journal_mode")[0][0] == "delete", "a backup is one self-contained file"
    assert (path / "memory" / f"{USER}.faiss").read_bytes() == (tmp_path / "data" / "memory" / f"{USER}.faiss").read_bytes()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["revision"] == rows(live, "SELECT version_num FROM alembic_version")[0][0]
    assert manifest["rows"]["messages"] == 4
    [audited] = await audited_actions(app, 1)
    assert (audited.admin_id, audited.action) == (ADMIN, "backup")
    assert audited.outcome.startswith(f"written {path.name}")


async def test_a_backup_taken_during_heavy_writes_is_consistent(start_bot: BotFactory, tmp_path: Path) -> None:
    """WAL-safe: the bot keeps writing while SQLite copies; the copy is a
    consistent snapshot somewhere between the counts before and after."""
    app = await start_bot()
    stop = asyncio.Event()

    async def writer() -> int:
        written = 0
        while not stop.is_set():
            written += 1
            await app.users.touch(UserProfile(10_000 + written, f"user{written}"), "user")
        return written

    task = asyncio.create_task(writer())
    while await app.users.count() < 20:
        await asyncio.sleep(0.01)
    before = await app.users.count()
    result = await app.backups.run()
    stop.set()
    await task
    after = await app.users.count()
    assert result.database is not None and integrity(result.database) == "ok"
    in_backup = rows(result.database, "SELECT count(*) FROM users")[0][0]
    assert before <= in_backup <= after
    assert result.rows["users"] == in_backup


async def test_two_backups_at_once_are_refused_cleanly(
    start_bot: BotFactory, tg: FakeTelegram, tmp_path: Path
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    first, second = await asyncio.gather(
        app.periodic.run_guarded("backup"), app.periodic.run_guarded("backup")
    )
    assert first.ok and not second.ran
    assert len(list_backups(app.backups.backups_dir)) == 1
    # Another process (the CLI) holding the lock: /backup says so.
    with exclusive(app.backups.backups_dir):
        with pytest.raises(BackupBusy):
            app.backups.run_sync()
        tg.user_text("/backup", chat_id=ADMIN)
        [answer] = await tg.wait_messages(ADMIN, 1, timeout=30)
    assert answer.text == "A backup is already running; try again when it has finished."
    assert len(list_backups(app.backups.backups_dir)) == 1


async def test_backup_with_arguments_answers_the_usage(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    tg.user_text("/backup everything please", chat_id=ADMIN)
    [answer] = await tg.wait_messages(ADMIN, 1)
    assert answer.text == "Usage: /backup"
    assert list_backups(app.backups.backups_dir) == []


async def test_nightly_job_writes_the_same_backup(start_bot: BotFactory, tmp_path: Path) -> None:
    app = await start_bot(bot_backup_time="02:45", bot_backup_keep=2)
    job = app.scheduler.get_job("system:backup")
    assert job is not None and str(job.trigger.fields[5]) == "2" and str(job.trigger.fields[6]) == "45"
    for _ in range(3):
        assert await app.periodic.run_now("backup")
    backups = list_backups(tmp_path / "data" / "backups")
    assert len(backups) == 2, "keeps the last BOT_BACKUP_KEEP"
    assert integrity(backups[-1] / "arium.db") == "ok"
    assert app.periodic.tasks["backup"].last_result.path == backups[-1]  # type: ignore[union-attr]


def test_keeps_the_last_n_and_clears_crash_leftovers(tmp_path: Path) -> None:
    asyncio.run(make_database(tmp_path, "Ann"))
    backups = service(tmp_path, keep=3)
    (tmp_path / "backups" / ".partial-20000101-000000").mkdir(parents=True)
    made = [backups.run_sync().path for _ in range(5)]
    kept = list_backups(tmp_path / "backups")
    assert kept == made[-3:] and len(set(made)) == 5
    assert not (tmp_path / "backups" / ".partial-20000101-000000").exists()
    assert not made[0].exists()


def test_postgres_backups_hold_indexes_and_files_and_say_the_database_is_pg_dumps(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "7.faiss").write_bytes(b"index")
    (tmp_path / "memory" / ".7.faiss.tmp123").write_bytes(b"half written")
    (tmp_path / "files" / "7").mkdir(parents=True)
    (tmp_path / "files" / "7" / "notes.txt").write_text("milk")
    result = service(tmp_path, url=POSTGRES).run_sync()
    assert result.database is None and result.database_note and "pg_dump" in result.database_note
    assert (result.path / "memory" / "7.faiss").read_bytes() == b"index"
    assert not (result.path / "memory" / ".7.faiss.tmp123").exists()
    assert (result.path / "files" / "7" / "notes.txt").read_text() == "milk"
    assert result.index_files == 1 and result.user_files == 1


# --- restore -----------------------------------------------------------------------


async def test_restore_puts_the_backup_back_and_keeps_the_replaced_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db_file = await make_database(data, "Ann", "Bob")
    (data / "memory").mkdir()
    (data / "memory" / "1.faiss").write_bytes(b"old index")
    backup = (await service(data).run()).path
    # Life goes on after the backup.
    from bot.storage.repositories import UserRepository

    db = Database(f"sqlite+aiosqlite:///{db_file}")
    await UserRepository(db, "UTC").touch(UserProfile(3, "Cleo"), "user")
    await db.dispose()
    (data / "memory" / "1.faiss").write_bytes(b"new index")
    (data / "files" / "3").mkdir(parents=True)
    (data / "files" / "3" / "notes.md").write_text("Cleo's notes")

    result = await restore(service(data).config, backup.name)

    assert [r[1] for r in table(db_file, "users")] == ["Ann", "Bob"]
    assert (data / "memory" / "1.faiss").read_bytes() == b"old index"
    assert result.migrated_to is None and result.index_files == 1
    [aside_db] = [p for p in result.set_aside if p.name.startswith("arium.db.replaced-")]
    assert [r[1] for r in table(aside_db, "users")] == ["Ann", "Bob", "Cleo"], "the replaced database is kept, whole"
    [aside_memory] = [p for p in result.set_aside if p.name.startswith("memory.replaced-")]
    assert (aside_memory / "1.faiss").read_bytes() == b"new index"
    assert result.user_files == 0 and not (data / "files" / "3").exists(), "the backup had no user files"
    [aside_files] = [p for p in result.set_aside if p.name.startswith("files.replaced-")]
    assert (aside_files / "3" / "notes.md").read_text() == "Cleo's notes"


async def test_restore_refuses_while_the_bot_runs(start_bot: BotFactory, tmp_path: Path) -> None:
    app = await start_bot()
    app.status.write_now()
    backup = (await app.backups.run()).path
    before = (tmp_path / "data" / "arium.db").stat().st_ino
    with pytest.raises(RestoreRefused, match=r"the bot is running \(pid \d+\); stop it first"):
        await restore(app.backups.config, backup.name)
    assert (tmp_path / "data" / "arium.db").stat().st_ino == before
    assert not list((tmp_path / "data").glob("*.replaced-*"))


async def test_restore_reads_the_pid_file_of_start_sh(tmp_path: Path) -> None:
    """scripts/start.sh (background or --foreground) writes arium.pid; a live
    bot process named there blocks a restore, a stale pid file does not."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    await make_database(data, "Ann")
    backup = (await service(data).run()).path
    bot = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "bot", "run"])
    try:
        # Popen returns while the kernel may still be setting up the new
        # program, when /proc/PID/cmdline reads empty; a real bot named in the
        # pid file has long been past that.
        cmdline = Path(f"/proc/{bot.pid}/cmdline")
        await eventually(lambda: asyncio.to_thread(cmdline.read_bytes), bool)
        (data / "arium.pid").write_text(f"{bot.pid}\n")
        with pytest.raises(RestoreRefused, match=f"pid {bot.pid}"):
            await restore(service(data).config, backup.name)
    finally:
        bot.kill()
        bot.wait()
    result = await restore(service(data).config, backup.name)  # the pid file is stale now
    assert result.revision == schema_head()


async def test_start_sh_foreground_names_the_bot_in_the_pid_file(tmp_path: Path) -> None:
    """Under systemd the bot runs through `start.sh --foreground`, which execs
    it: the pid file holds the bot's own pid, so restore and stop.sh find it."""
    import os
    import signal

    async with FakeTelegram() as tg, FakeModelServer() as model:
        env = clean_env(
            tmp_path, TELEGRAM_BOT_TOKEN=tg.TOKEN, TELEGRAM_API_URL=tg.url, BOT_MODELS="openai:gpt-4o-mini",
            OPENAI_API_KEY="test-key", OPENAI_BASE_URL=model.openai_base_url, BOT_POLL_TIMEOUT="1",
            EMBEDDING_MODEL=FAKE_EMBEDDINGS,
        )
        process = await asyncio.create_subprocess_exec(
            "bash", str(REPO / "scripts" / "start.sh"), "--foreground", cwd=REPO, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        pid_file = tmp_path / "data" / "arium.pid"
        try:
            await wait_for_file(pid_file, timeout=90)
            # `echo $$ >file` creates the file before it writes the pid: read once it is written.
            deadline = asyncio.get_running_loop().time() + 10
            while not pid_file.read_text().strip():
                assert asyncio.get_running_loop().time() < deadline, "the pid file stayed empty"
                await asyncio.sleep(0.02)
            assert int(pid_file.read_text()) == process.pid
            cmdline = Path(f"/proc/{process.pid}/cmdline")
            deadline = asyncio.get_running_loop().time() + 60
            while b"-m\x00bot\x00run" not in cmdline.read_bytes():  # until start.sh has exec'd the bot
                assert asyncio.get_running_loop().time() < deadline, "start.sh never started the bot"
                await asyncio.sleep(0.05)
            with pytest.raises(RestoreRefused, match=f"pid {process.pid}"):
                await restore(service(tmp_path / "data").config, "anything")
        finally:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)  # a clean SIGTERM stop is test_operations' subject
            await process.wait()


async def test_restore_migrates_an_older_backup(tmp_path: Path) -> None:
    from alembic import command

    from bot.storage.db import alembic_config

    old = tmp_path / "old.db"

    def upgrade_to_0005() -> None:
        from sqlalchemy import create_engine

        engine = create_engine(f"sqlite:///{old}")
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0005_memory")
        engine.dispose()

    upgrade_to_0005()
    data = tmp_path / "data"
    data.mkdir()
    await make_database(data, "Ann")
    result = await restore(service(data).config, str(old))
    assert result.revision == "0005_memory" and result.migrated_to == schema_head()
    assert rows(data / "arium.db", "SELECT version_num FROM alembic_version") == [(schema_head(),)]
    assert integrity(data / "arium.db") == "ok"


def test_cli_backup_then_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    asyncio.run(make_database(data, "Ann"))
    made = cli(tmp_path, "backup")
    assert made.returncode == 0, made.stderr
    assert "backup written:" in made.stdout and "1 users" in made.stdout
    [backup] = list_backups(data / "backups")
    asyncio.run(make_database(data, "Ann", "Bob"))  # one more user since
    restored = cli(tmp_path, "restore", backup.name)
    assert restored.returncode == 0, restored.stderr
    assert "kept aside" in restored.stdout
    assert [r[1] for r in table(data / "arium.db", "users")] == ["Ann"]


async def test_restore_refuses_bad_backups_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db_file = await make_database(data, "Ann")
    original = db_file.read_bytes()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 200)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE notes (text TEXT)").connection.commit()
    future = tmp_path / "future.db"
    connection = sqlite3.connect(future)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    connection.execute("INSERT INTO alembic_version VALUES ('0099_from_the_future')")
    connection.commit()
    connection.close()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(original[: len(original) // 2])
    cases = {
        str(foreign): "not an Arium database",
        str(future): "does not know",
        str(truncated): "damaged",
        "20990101-000000": "no backup '20990101-000000'",
    }
    for name, expected in cases.items():
        with pytest.raises(RestoreRefused) as refused:
            await restore(service(data).config, name)
        assert expected in str(refused.value) and "nothing was changed" in str(refused.value), str(refused.value)
    # The command line: one clear line, no traceback.
    result = await asyncio.to_thread(cli, tmp_path, "restore", str(garbage))
    assert result.returncode == 1
    assert "is not a valid SQLite database" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert db_file.read_bytes() == original
    assert not list(data.glob("*.replaced-*"))


async def test_restore_refuses_postgres(tmp_path: Path) -> None:
    with pytest.raises(RestoreRefused, match="pg_restore"):
        await restore(service(tmp_path, url=POSTGRES).config, "anything")


# --- doctor --------------------------------------------------------------------------


async def test_doctor_checks_backups_disk_and_logs(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeModelServer() as model:
        settings = fake_settings(tmp_path / "data", tg, model)
        lines: list[str] = []
        assert await run_doctor(settings, lines.append) == 0
        assert any(line.startswith("info last backup: none yet") for line in lines), lines
        assert any(line.startswith("ok   backups dir") for line in lines)
        assert any(line.startswith("ok   log dir") for line in lines)
        assert any(line.startswith("ok   disk") and "free of" in line for line in lines)

        await service(settings.bot_data_dir.resolve()).run()
        lines.clear()
        assert await run_doctor(settings, lines.append) == 0
        assert any(line.startswith("ok   last backup") and "0 h ago" in line for line in lines), lines

        for path in list_backups(settings.backups_dir):  # as if the nightly job had stopped long ago
            path.rename(path.with_name("20200101-033000"))
        lines.clear()
        assert await run_doctor(settings, lines.append) == 1
        assert any(line.startswith("FAIL last backup: 20200101-033000") for line in lines), lines


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"), (20 * 1024**2, "20.0 MB"),
     (3 * 1024**3, "3.0 GB"), (5 * 1024**4, "5.0 TB"), (2048 * 1024**4, "2048.0 TB")],
)
def test_sizes_are_shown_in_the_largest_unit_that_keeps_the_number_at_one_or_more(size: int, shown: str) -> None:
    from bot.runtime.units import human_size

    assert human_size(size) == shown
