"""/backup (admin): a backup now, through the same overlap guard as the
nightly one, answered with what was written (where, what, size, time).

The backup runs in a thread; other chats are served meanwhile. The file
stays on the server: it holds every user's data, so it is never sent
through Telegram."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.ext import Application, ContextTypes

import bot.admin.backup_strings  # noqa: F401  (registers the strings)
from bot.admin.backup import BackupBusy, BackupResult
from bot.runtime.units import human_size
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.context import RequestContext, SecretMasker
from bot.runtime.errorlog import summarize
from bot.runtime.events import EventBus
from bot.i18n import t
from bot.periodic import TaskRun

log = logging.getLogger(__name__)

RunBackup = Callable[[], Awaitable[TaskRun]]


class BackupCommands(AdminCommands):
    def __init__(self, events: EventBus, run_backup: RunBackup, mask: SecretMasker) -> None:
        super().__init__(events)
        self._run_backup = run_backup
        self._mask = mask

    def register_admin(self, application: Application) -> None:
        self.command(application, "backup", self._on_backup)

    async def _on_backup(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        if args:
            return await self.usage(update, ctx, "/backup")
        run = await self._run_backup()
        if not run.ran or isinstance(run.error, BackupBusy):
            await reply(update, t("backup_busy", ctx.language))
            return "refused: a backup is already running"
        if run.error is not None:
            reason = summarize(run.error, self._mask)
            log.warning("/backup failed: %s", reason)
            await reply(update, t("backup_failed", ctx.language, reason=reason))
            return f"failed: {reason}"
        assert isinstance(run.result, BackupResult)
        await reply(update, render_result(run.result, ctx.language))
        return f"written {run.result.path.name} ({human_size(run.result.size)})"


def render_result(result: BackupResult, language: str) -> str:
    parts: list[str] = []
    if result.database is not None:
        rows = {table: result.rows.get(table, 0) for table in ("users", "messages", "memories")}
        parts.append(
            t("backup_part_database", language, size=human_size(result.database.stat().st_size), **rows)
        )
    parts.append(t("backup_part_indexes", language, count=result.index_files))
    if result.user_files is not None:
        parts.append(t("backup_part_files", language, count=result.user_files))
    text = t(
        "backup_done", language, duration=f"{result.duration:.1f}", path=str(result.path),
        contents="\n".join(parts), size=human_size(result.size), kept=result.kept,
    )
    if result.database_note:
        text += "\n" + t("backup_postgres", language)
    return text
