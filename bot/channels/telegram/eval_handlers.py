"""/eval (admin): a signed link to the evaluation results page on the HTTP
API's server (bot/eval/links.py signs it). Sent only in the admin's private
chat: whoever holds the link sees every run until it expires. The link is
not written to the audit log."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, ContextTypes

import bot.admin.eval_strings  # noqa: F401  (registers the strings)
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.context import RequestContext
from bot.eval.links import LINK_TTL, EvalLinks
from bot.i18n import t
from bot.runtime.events import EventBus


class EvalPageCommands(AdminCommands):
    def __init__(self, events: EventBus, links: EvalLinks, page_root: str | None) -> None:
        """``page_root``: API_PUBLIC_URL (or API_HOST:API_PORT); None when
        the HTTP API is not served, so there is no page to link to."""
        super().__init__(events)
        self._links = links
        self._page_root = page_root

    def register_admin(self, application: Application) -> None:
        self.command(application, "eval", self._on_eval)

    async def _on_eval(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        if args:
            return await self.usage(update, ctx, "/eval")
        if self._page_root is None:
            await reply(update, t("evalpage_no_api", ctx.language))
            return "refused: the HTTP API is not enabled"
        if not ctx.is_private:
            await reply(update, t("evalpage_private_only", ctx.language))
            return "refused: not a private chat"
        link = self._links.page_link(self._page_root)
        await reply(update, t("evalpage_link", ctx.language, minutes=LINK_TTL // 60, url=link))
        return "link sent"
