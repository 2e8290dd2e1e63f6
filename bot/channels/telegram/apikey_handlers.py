"""/apikey (admin): the HTTP API's keys from Telegram, as on the command
line (bot/apikeys.py). A new key is shown only in the admin's private chat,
and never written to the audit log."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, ContextTypes

import bot.admin.apikey_strings  # noqa: F401  (registers the strings)
from bot.apikeys import ApiKeyCommandError, create_key, describe, revoke_key
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.context import RequestContext
from bot.runtime.events import EventBus
from bot.i18n import t
from bot.storage.api_keys import ApiKeyRepository
from bot.storage.repositories import UserRepository


class ApiKeyCommands(AdminCommands):
    def __init__(self, events: EventBus, keys: ApiKeyRepository, users: UserRepository, admin_ids: frozenset[int]) -> None:
        super().__init__(events)
        self._keys = keys
        self._users = users
        self._admin_ids = admin_ids

    def register_admin(self, application: Application) -> None:
        self.command(application, "apikey", self._on_apikey)

    async def _on_apikey(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        action = args[0].lower() if args else ""
        try:
            if action == "list" and len(args) == 1:
                return await self._list(update, ctx)
            if action == "create" and len(args) in (2, 3):
                return await self._create(update, ctx, args[1], args[2] if len(args) == 3 else None)
            if action == "revoke" and len(args) == 2:
                name = await revoke_key(self._keys, args[1])
                await reply(update, t("apikey_revoked", ctx.language, name=name))
                return f"revoked {name}"
        except ApiKeyCommandError as exc:
            await reply(update, t(f"apikey_err_{exc.code}", ctx.language, **exc.values))
            return f"refused: {exc}"
        return await self.usage(update, ctx, t("apikey_usage", ctx.language))

    async def _list(self, update: Update, ctx: RequestContext) -> str:
        records = await self._keys.listed()
        await reply(update, "\n".join(describe(r) for r in records) if records else t("apikey_none", ctx.language))
        return f"listed {len(records)}"

    async def _create(self, update: Update, ctx: RequestContext, name: str, user: str | None) -> str:
        if not ctx.is_private:
            await reply(update, t("apikey_private_only", ctx.language))
            return "refused: not a private chat"
        if user is not None and not user.isdigit():
            raise ApiKeyCommandError("bad_user")
        record, key = await create_key(self._users, self._keys, self._admin_ids, name, int(user) if user else ctx.user_id)
        await reply(update, f"{t('apikey_created', ctx.language, name=record.name, user=record.user_id)}\n\n{key}")
        return f"created {record.name} for user {record.user_id}"
