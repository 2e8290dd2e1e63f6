"""/health: the error log (scrubbed, bounded), the measurements (database size
on SQLite and PostgreSQL, memory), and the command end to end."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from bot import __version__
from bot.admin.health import HealthMonitor, database_size, memory_use, sqlite_files
from bot.app import Arium
from bot.channels.telegram.stats_handlers import fmt_duration
from bot.storage.db import Database
from bot.storage.models import AuditEntry
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker
from bot.context import Redactor
from bot.runtime.errorlog import ErrorLog, ErrorReporter
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram

ADMIN = 1001
STRANGER = 1002
FAKE_KEY = "sk-fake-SECRET-key-4242"


# --- The error log ------------------------------------------------------------------


def test_the_error_reporter_keeps_one_scrubbed_line_per_error() -> None:
    reporter = ErrorReporter(Redactor([FAKE_KEY, "123456:TEST-TOKEN"]))
    assert reporter.log.last is None and reporter.log.count == 0
    failure = RuntimeError(
        f"POST https://bot:pw@api.example.com/bot123456:TEST-TOKEN/sendMessage?key={FAKE_KEY} failed\n"
        "Traceback line two with more detail"
    )
    reporter.report(failure, "background task memory-extract")
    entry = reporter.log.last
    assert entry is not None
    assert entry.summary == "RuntimeError: POST https://api.example.com/bot***/sendMessage failed"
    assert entry.where == "background task memory-extract"
    assert FAKE_KEY not in entry.summary and "TEST-TOKEN" not in entry.summary and "pw" not in entry.summary
    reporter.report(ValueError(), "update")
    assert reporter.log.last is not None and reporter.log.last.summary == "ValueError"
    reporter.report(KeyError("x" * 1000), "update")
    assert reporter.log.last is not None and len(reporter.log.last.summary) == 200
    assert reporter.log.last.summary.endswith("…") and reporter.log.count == 3


def test_token_shaped_text_is_hidden_even_when_not_configured() -> None:
    reporter = ErrorReporter(Redactor([]))
    reporter.report(OSError("https://api.telegram.org/bot987654321:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe"), "x")
    assert reporter.log.last is not None
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in reporter.log.last.summary


async def test_the_task_tracker_reports_failures_to_the_error_log(caplog: pytest.LogCaptureFixture) -> None:
    reporter = ErrorReporter(Redactor([FAKE_KEY]))
    tasks = TaskTracker(on_error=reporter.report)

    async def fails() -> None:
        raise RuntimeError(f"bad key {FAKE_KEY}")

    task = tasks.spawn(fails(), "probe")
    with pytest.raises(RuntimeError):
        await task
    await tasks.drain(timeout=1)
    last = reporter.log.last
    assert last is not None and "probe" in last.where
    assert last.summary == "RuntimeError: bad key ***"
    assert "unhandled error" in caplog.text and "probe" in caplog.text, "still logged, with the traceback"


# --- Measurements --------------------------------------------------------------------


def test_memory_use_reads_proc_or_falls_back_to_the_peak(tmp_path: Path) -> None:
    current = memory_use()
    assert current is not None and current.bytes > 1024 * 1024
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  512 kB\n")
    assert memory_use(status).bytes == 512 * 1024 and not memory_use(status).peak  # type: ignore[union-attr]
    fallback = memory_use(tmp_path / "missing")
    assert fallback is not None and fallback.peak and fallback.bytes > 0


def test_sqlite_files_are_the_database_and_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "arium.db"
    assert sqlite_files(f"sqlite+aiosqlite:///{path}") == [path, tmp_path / "arium.db-wal"]
    assert sqlite_files("sqlite+aiosqlite:///:memory:") == []


@pytest.mark.postgres
async def test_database_size_counts_what_is_stored(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
        before = await database_size(db)
        assert before is not None and before > 0
        async with db.session() as s:
            rows = [{"created_at": utcnow(), "admin_id": 1, "action": "x", "arguments": "y" * 2000, "outcome": ""}] * 500
            await s.execute(insert(AuditEntry), rows)
        after = await database_size(db)
        assert after is not None
        if db.dialect == "sqlite":
            assert after > before, "a megabyte of new rows shows (in the WAL until a checkpoint)"
    finally:
        await db.dispose()


class NoModels:
    def health(self) -> list[dict[str, object]]:
        return []


class IdleTools:
    capacity = 40
    admitted = 0


async def test_health_report_fields(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'arium.db'}")
    await db.migrate()
    ticks = iter([100.0, 100.0 + 3 * 86400 + 5 * 3600 + 7 * 60])
    monitor = HealthMonitor(db, tasks=TaskTracker(), tools=IdleTools(), errors=ErrorLog(), models=NoModels(),
                            clock=lambda: next(ticks))
    report = await monitor.report(updates_waiting=2, updates_in_progress=1)
    await db.dispose()
    assert report.version == __version__ and report.database == "sqlite"
    assert report.uptime == 3 * 86400 + 5 * 3600 + 7 * 60
    assert report.database_bytes is not None and report.database_bytes > 0
    assert report.memory is not None and report.memory.bytes > 0
    assert (report.queues.tool_capacity, report.queues.updates_waiting, report.queues.updates_in_progress) == (40, 2, 1)
    assert report.last_error is None and report.endpoints == 0
    assert fmt_duration(report.uptime, "en") == "3d 5h 7m"
    assert fmt_duration(report.uptime, "ru") == "3 д 5 ч 7 мин"


# --- End to end -----------------------------------------------------------------------


@pytest.fixture
async def admin_bot(start_bot: BotFactory) -> AsyncIterator[Arium]:
    yield await start_bot(bot_admin_ids=str(ADMIN), openai_api_key=FAKE_KEY)


def sizes(text: str, label: str) -> float:
    """The number before the unit in "<label> ... 12.3 MB"."""
    match = re.search(rf"{label}[^\n]*?(\d+(?:\.\d+)?) (B|KB|MB|GB)", text)
    assert match is not None, f"no size after {label!r} in {text!r}"
    return float(match.group(1)) * 1024 ** ["B", "KB", "MB", "GB"].index(match.group(2))


async def test_health_shows_uptime_version_sizes_queues_and_the_last_error_without_secrets(
    admin_bot: Arium, tg: FakeTelegram, model: FakeModelServer
) -> None:
    assert await admin_bot.memory.embeddings.wait_ready(30)
    tg.user_text("/health", chat_id=ADMIN)
    [first] = await tg.wait_messages(ADMIN, 1)
    text = first.text
    assert text.startswith("Health · ")
    assert re.search(rf"Version {re.escape(__version__)} · up \d+d \d+h \d+m", text)
    assert sizes(text, "Database: sqlite,") > 0
    assert sizes(text, "Memory:") > 10 * 1024 * 1024
    assert re.search(r"Queues: background tasks \d+ · tool calls 0 of 40 · updates waiting \d+ · being handled [1-9]", text)
    assert "Models: 1 endpoints · ✅ closed 1" in text
    assert "Memory search: by meaning (bundled:all-MiniLM-L6-v2) and by words" in text
    assert "Last error: none since the start" in text

    async def leaks() -> None:
        raise ConnectionError(f"https://user:hunter2@api.example.com/v1?key={FAKE_KEY} refused ({tg.TOKEN})")

    admin_bot.tasks.spawn(leaks(), "probe-task")
    await tg.wait_for(lambda: admin_bot.error_log.count == 1)
    first_error = admin_bot.error_log.last
    assert first_error is not None
    assert first_error.summary == "ConnectionError: https://api.example.com/v1 refused (***)"
    # An error in an update handler reaches the same reporter through the channel.
    await admin_bot.telegram.application.process_error(None, ValueError(f"handler broke with {FAKE_KEY}"))

    tg.user_text("/health", chat_id=ADMIN)
    # The admin also gets one alert per kind of error, before the second /health.
    later = (await tg.wait_messages(ADMIN, 4))[1:]
    [second] = [m for m in later if m.text.startswith("Health · ")]
    alerts = sorted(m.text.split(":")[0] for m in later if m is not second)
    assert alerts == ["⚠️ Error in probe-task", "⚠️ Error in update handler"]
    assert re.search(r"Last error: \d{4}-\d\d-\d\d \d\d:\d\d UTC, update handler: ValueError: handler broke with \*\*\* \(2 since the start\)", second.text)
    for message in tg.messages(ADMIN):
        assert FAKE_KEY not in message.text and tg.TOKEN not in message.text and "hunter2" not in message.text


async def test_health_is_refused_to_non_admins_and_checks_its_arguments(
    admin_bot: Arium, tg: FakeTelegram, model: FakeModelServer
) -> None:
    tg.user_text("/health", chat_id=STRANGER)
    [refused] = await tg.wait_messages(STRANGER, 1)
    assert refused.text == "I don't know the command /health. /help lists the ones I understand."
    tg.user_text("/health now", chat_id=ADMIN)
    [usage] = await tg.wait_messages(ADMIN, 1)
    assert usage.text == "Usage: /health"
    tg.user_text("/health", chat_id=-100999, user_id=ADMIN, chat_type="supergroup")
    [group] = await tg.wait_messages(-100999, 1)
    assert "private chat" in group.text and "Version" not in group.text
