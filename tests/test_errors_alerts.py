"""The error path: one handler for update handlers, background tasks and
scheduler jobs; logs with the request id; rate-limited admin alerts with a
short summary; secrets masked everywhere; and the bot's own rotating log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from telegram import Update
from telegram.ext import CommandHandler, ContextTypes

from bot.context import SecretMasker, configure_logging, current_request_id
from bot.doctor import run_doctor
from bot.runtime.errorlog import ErrorReporter
from bot.runtime.tasks import TaskTracker
from tests.conftest import BotFactory
from tests.fakes.telegram_server import FakeTelegram

ADMIN = 555
USER = 1001
API_KEY = "sk-fake-SECRET-api-key-0042"
FRIENDLY = "Something went wrong on my side. Your message was saved; please try again."


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The bot's log file as `python -m bot run` sets it up (handlers restored after)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    path = tmp_path / "logs" / "arium.log"
    yield path
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


class Recorder:
    """Where the reporter's alerts go in unit tests (the real one is AdminAlerts)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, text: str) -> None:
        self.sent.append(text)


async def test_a_failing_handler_answers_kindly_logs_and_alerts_admins_once(
    start_bot: BotFactory, tg: FakeTelegram, log_file: Path
) -> None:
    token = tg.TOKEN
    app = await start_bot(bot_admin_ids=str(ADMIN), openai_api_key=API_KEY)
    configure_logging("INFO", app.settings.secrets(), str(log_file))
    request_ids: list[str] = []

    async def boom(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        await app.telegram._gate(update)  # builds the request context, as every handler does
        request_ids.append(current_request_id.get())
        raise RuntimeError(f"upstream refused https://api.example/bot{token}/x with key {API_KEY}\nsecond line")

    # First in the default group, like any command of the bot (a handler in
    # another group would let the unknown-command answer run as well).
    app.telegram.application.handlers[0].insert(0, CommandHandler("boom", boom))
    for _ in range(3):
        tg.user_text("/boom", chat_id=USER)
    replies = await tg.wait_messages(USER, 3)
    [alert] = await tg.wait_messages(ADMIN, 1)

    assert [r.text for r in replies] == [FRIENDLY] * 3
    assert alert.text.startswith("⚠️ Error in update handler: RuntimeError: upstream refused")
    assert f"request id: {request_ids[0]}" in alert.text
    assert "second line" not in alert.text and "Traceback" not in alert.text
    assert app.error_log.count == 3 and app.error_log.last is not None
    assert app.error_log.last.request_id == request_ids[2]
    assert app.error_log.last.summary.startswith("RuntimeError: upstream refused")

    for handler in logging.getLogger().handlers:
        handler.flush()
    log = log_file.read_text()
    for request_id in request_ids:
        assert f"ERROR [{request_id}] bot.runtime.errorlog: unhandled error in update handler" in log
    assert "Traceback" in log and "second line" in log, "the log keeps the whole story"
    assert log.count("admin alert:") == 1
    chat = [m.text for chat in (USER, ADMIN) for m in tg.messages(chat)]
    for secret in (token, token.split(":")[1], API_KEY):
        assert secret not in log and secret not in alert.text and all(secret not in text for text in chat)
        assert secret not in app.error_log.last.summary
    assert tg.messages(ADMIN) == [alert], "repeated errors within the window send one alert"

    # `python -m bot doctor` shows it from the status file.
    app.status.write_now()
    lines: list[str] = []
    await run_doctor(app.settings, lines.append)
    [shown] = [line for line in lines if "errors since start" in line]
    assert "errors since start: 3" in shown and "RuntimeError: upstream refused" in shown
    assert API_KEY not in shown and token not in shown


async def test_background_task_errors_reach_the_same_handler(
    start_bot: BotFactory, tg: FakeTelegram, log_file: Path
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    configure_logging("INFO", app.settings.secrets(), str(log_file))

    async def extraction() -> None:
        raise KeyError("memory-row-17")

    current_request_id.set("req-bg-1")
    try:
        app.tasks.spawn(extraction(), "memory-extract")
    finally:
        current_request_id.set("-")
    [alert] = await tg.wait_messages(ADMIN, 1)
    assert alert.text.startswith("⚠️ Error in memory-extract: KeyError: 'memory-row-17'")
    assert "request id: req-bg-1" in alert.text
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "ERROR [req-bg-1] bot.runtime.errorlog: unhandled error in memory-extract" in log_file.read_text()


async def test_a_failing_nightly_job_is_reported() -> None:
    """Periodic tasks report through the same handler (not APScheduler's log)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.periodic import GuardedTask, PeriodicTasks
    from bot.reminders.clock import SystemClock

    alerts = Recorder()
    reporter = ErrorReporter(SecretMasker([]), window=600)
    reporter.connect(alerts)

    async def broken_backup() -> None:
        raise OSError(28, "No space left on device")

    periodic = PeriodicTasks(AsyncIOScheduler(), SystemClock(), reporter.report)
    periodic.tasks["backup"] = GuardedTask("backup", broken_backup)
    assert not await periodic.run_now("backup")
    assert alerts.sent == ["⚠️ Error in periodic task backup: OSError: [Errno 28] No space left on device"]
    manual = await periodic.run_guarded("backup", report=False)
    assert manual.ran and isinstance(manual.error, OSError) and len(alerts.sent) == 1


def test_alerts_are_rate_limited_per_kind_and_count_what_was_held_back() -> None:
    now = [1000.0]
    alerts = Recorder()
    wall = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    reporter = ErrorReporter(SecretMasker(["123456:TEST-TOKEN"]), window=600, now=lambda: now[0], wall_clock=lambda: wall)
    reporter.connect(alerts)
    for _ in range(4):
        reporter.report(RuntimeError("db gone"), "update handler")
    reporter.report(ValueError("other kind"), "update handler")
    assert len(alerts.sent) == 2, "one per kind within the window"
    now[0] += 599
    reporter.report(RuntimeError("db gone"), "update handler")
    assert len(alerts.sent) == 2
    now[0] += 2
    reporter.report(RuntimeError("db still gone for 123456:TEST-TOKEN"), "update handler")
    assert alerts.sent[-1] == (
        "⚠️ Error in update handler: RuntimeError: db still gone for ***\n"
        "4 more RuntimeError error(s) since the last alert were not sent."
    )
    assert reporter.log.count == 7
    assert reporter.log.snapshot()["last"] == {
        "at": "2025-03-01T12:00:00+00:00", "kind": "RuntimeError",
        "summary": "RuntimeError: db still gone for ***", "where": "update handler", "request_id": "-",
    }


def test_alert_failures_are_logged_but_never_alerted() -> None:
    alerts = Recorder()
    reporter = ErrorReporter(SecretMasker([]))
    reporter.connect(alerts)
    reporter.report(ConnectionError("telegram unreachable"), "admin-alert")
    assert alerts.sent == [] and reporter.log.count == 1


def test_long_messages_are_cut_to_one_short_line() -> None:
    alerts = Recorder()
    reporter = ErrorReporter(SecretMasker([]))
    reporter.connect(alerts)
    reporter.report(ValueError("x" * 1000 + "\nmore"), "update handler")
    assert reporter.log.last is not None and len(reporter.log.last.summary) == 200
    assert "\n" not in reporter.log.last.summary and "more" not in alerts.sent[0]


def test_tracebacks_in_the_log_are_masked_too(log_file: Path) -> None:
    token = "987654:TRACEBACK-SECRET"
    configure_logging("INFO", [token], str(log_file))
    try:
        raise PermissionError(f"GET https://api.telegram.org/bot{token.replace(':', '%3A')}/getMe denied for {token}")
    except PermissionError:
        logging.getLogger("bot.test").exception("request failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    output = log_file.read_text()
    assert "Traceback" in output and "PermissionError" in output
    assert "TRACEBACK-SECRET" not in output and output.count("***") == 2


def test_log_file_rolls_over_at_the_configured_size(log_file: Path) -> None:
    configure_logging("INFO", [], str(log_file), max_bytes=2_000, backup_count=2)
    logger = logging.getLogger("bot.rotation")
    for number in range(100):
        logger.info("line %03d %s", number, "x" * 60)
    for handler in logging.getLogger().handlers:
        handler.flush()
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["arium.log", "arium.log.1", "arium.log.2"], "older files beyond BOT_LOG_BACKUPS are dropped"
    assert all((log_file.parent / name).stat().st_size <= 2_000 for name in files)
    assert "line 099" in log_file.read_text()


async def test_task_tracker_errors_keep_the_request_id_of_their_turn(caplog: pytest.LogCaptureFixture) -> None:
    reporter = ErrorReporter(SecretMasker([]))
    tasks = TaskTracker(reporter.report)

    async def fails() -> None:
        raise RuntimeError("late failure")

    token = current_request_id.set("turn-42")
    task = tasks.spawn(fails(), "after-turn")
    current_request_id.reset(token)
    with caplog.at_level(logging.ERROR, logger="bot.runtime.errorlog"):
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    [record] = [r for r in caplog.records if r.name == "bot.runtime.errorlog"]
    assert record.request_id == "turn-42"  # type: ignore[attr-defined]
    assert reporter.log.last is not None and reporter.log.last.request_id == "turn-42"
