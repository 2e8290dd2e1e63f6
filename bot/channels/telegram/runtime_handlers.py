"""Telegram side of run-time control: /models (with buttons to move, disable
and enable tiers), /prompts, /reload and /tools. The decisions live in
bot/admin/runtime.py; this module parses arguments and renders answers.

Buttons carry ``rt:<verb>:<position>:<layout version>``: a press on an older
view of the chain (someone changed it meanwhile) is refused and the view
refreshed, rather than acting on whichever tier sits at that position now."""

from __future__ import annotations

import html
import logging
import time
from typing import TYPE_CHECKING

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

import bot.admin.runtime_strings  # noqa: F401  (registers the strings)
from bot.channels.telegram.replies import answer_button, edit_after_button
from bot.admin.runtime import (
    ChainView,
    EndpointView,
    ModelsAction,
    ReloadReport,
    RuntimeControl,
    RuntimeRefused,
    TierView,
    parse_models_args,
)
from bot.admin.tools import ToolGroup, UnknownTool, parse_tools_args
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.channels.telegram.render import utf16_len
from bot.context import RequestContext
from bot.errors import StorageError
from bot.runtime.events import EventBus
from bot.i18n import t

if TYPE_CHECKING:
    from bot.tools.mcp.views import ServerView

log = logging.getLogger(__name__)

PREFIX = "rt"
TEXT_LIMIT = 4000  # under Telegram's 4096, for the markup around the text
# A reload report stays one message: prompt problems, then up to
# FAILED_SHOWN broken plugins with their errors shortened.
PROMPT_ERROR_LIMIT = 1500
PLUGIN_ERROR_LIMIT = 200
FAILED_SHOWN = 8


class RuntimeCommands(AdminCommands):
    def __init__(self, runtime: RuntimeControl, events: EventBus) -> None:
        super().__init__(events)
        self._runtime = runtime

    def register_admin(self, application: Application) -> None:
        self.command(application, "models", self._on_models)
        self.command(application, "prompts", self._on_prompts)
        self.command(application, "reload", self._on_reload)
        self.command(application, "tools", self._on_tools)
        application.add_handler(CallbackQueryHandler(self._on_button, pattern=rf"^{PREFIX}:"))

    # /models ------------------------------------------------------------------

    async def _on_models(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        action = parse_models_args(args)
        if action is None:
            return await self.usage(update, ctx, t("rt_models_usage", ctx.language))
        try:
            outcome = await self._runtime.models.apply(action, by=ctx.user_id)
        except (RuntimeRefused, StorageError) as exc:
            return await _not_done(update, ctx, "/models", exc)
        done = t(outcome.key, ctx.language, **outcome.values) if outcome.key else ""
        text, keyboard = render_chain(outcome.view, ctx.language, done)
        await _send(update, text, keyboard)
        return outcome.key or "shown"

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.admin_button(update)
        if pressed is None:
            return
        query, ctx = pressed
        action, version = _parse_button(query.data or "")
        if action is None:
            await _answer(query)
            return
        notice: str | None
        try:
            outcome = await self._runtime.models.apply(action, by=ctx.user_id, expected_version=version)
        except RuntimeRefused as exc:
            notice, view, outcome_key = t(exc.key, ctx.language, **exc.values), self._runtime.models.view(), exc.key
        except StorageError as exc:
            log.error("/models button could not save: %s", exc)
            notice, view, outcome_key = t("admin_failed", ctx.language, reason="database"), None, "failed: storage"
        else:
            notice = t(outcome.key, ctx.language, **outcome.values)
            view, outcome_key = outcome.view, outcome.key
        self.audit(ctx, "models", f"{action.verb} {action.positions[0]} (button)", outcome_key)
        await _answer(query, notice)
        if view is not None:
            text, keyboard = render_chain(view, ctx.language, notice or "")
            await _edit(query, text, keyboard)

    # /prompts -----------------------------------------------------------------

    async def _on_prompts(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        if not args:
            await reply(update, self._prompt_list(ctx.language), html=True)
            return "shown"
        if len(args) != 3 or args[0].lower() != "use":
            return await self.usage(update, ctx, t("rt_prompts_usage", ctx.language))
        try:
            template, pinned = await self._runtime.prompts.use(args[1], args[2], by=ctx.user_id)
        except (RuntimeRefused, StorageError) as exc:
            return await _not_done(update, ctx, "/prompts", exc)
        key = "rt_prompt_used" if pinned else "rt_prompt_latest"
        await reply(update, t(key, ctx.language, ref=template.ref, name=template.name))
        return f"active {template.ref}"

    def _prompt_list(self, language: str) -> str:
        views = self._runtime.prompts.view()
        if not views:
            return t("rt_prompts_empty", language)
        lines = [t("rt_prompts_header", language), ""]
        for view in views:
            versions = ", ".join(f"v{v} ✓" if v == view.active else f"v{v}" for v in view.versions)
            why = t("rt_prompt_pinned" if view.pinned else "rt_prompt_newest", language)
            lines.append(f"<b>{html.escape(view.name)}</b>: {versions} ({why})")
            if view.description:
                lines.append(f"   <i>{html.escape(view.description)}</i>")
        lines += ["", t("rt_prompts_help", language)]
        return "\n".join(lines)

    # /reload ------------------------------------------------------------------

    async def _on_reload(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        if args:
            return await self.usage(update, ctx, t("rt_reload_usage", ctx.language))
        report = await self._runtime.reload()
        await reply(update, render_reload(report, ctx.language), html=True)
        problems = int(report.prompts.error is not None) + len(report.plugins.failed)
        return f"reloaded; {len(report.plugins.added)} tools added, {len(report.plugins.removed)} removed, {problems} problems"


    # /tools -------------------------------------------------------------------

    async def _on_tools(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        action = parse_tools_args(args)
        if action is None:
            return await self.usage(update, ctx, t("tools_usage", ctx.language))
        if action.verb == "show":
            await reply(update, render_tools(self._runtime.tools.view(), ctx.language), html=True)
            return "shown"
        try:
            name = await self._runtime.tools.switch(action, by=ctx.user_id)
        except UnknownTool as exc:
            await reply(update, t("tools_unknown", ctx.language, name=exc.name))
            return "refused: unknown"
        except StorageError as exc:
            return await _not_done(update, ctx, "/tools", exc)
        await reply(update, t(f"tools_switched_{action.verb}", ctx.language, name=name))
        return f"{action.verb} {name}"


# Rendering -------------------------------------------------------------------------


# Tool names shown per group: as many as fit in one message, fewer when not.
TOOL_NAMES_SHOWN = (25, 5, 0)


def render_tools(groups: list[ToolGroup], language: str) -> str:
    tools = [tool for group in groups for tool in group.tools]
    on = sum(1 for _, is_on in tools if is_on)
    for shown in TOOL_NAMES_SHOWN:
        lines = [t("tools_header", language, on=on, off=len(tools) - on), ""]
        for group in groups:
            lines.append(_group_line(group, language, shown))
            if group.server is not None:
                lines += _server_lines(group.server, language)
        lines += ["", t("tools_help", language)]
        text = "\n".join(lines)
        if utf16_len(text) <= TEXT_LIMIT:
            break
    return text


def _group_line(group: ToolGroup, language: str, shown: int) -> str:
    names = [html.escape(name) if is_on else f"<s>{html.escape(name)}</s>" for name, is_on in group.tools]
    if len(names) > shown:
        names = [*names[:shown], f"… +{len(names) - shown}"]
    title = f"<b>{html.escape(group.name)}</b>"
    if not group.on:
        title += f" ⏸ <i>{t('tools_group_off', language)}</i>"
    if group.server is not None:
        server = group.server
        title += " — " + t("tools_server", language, state=server.state.value, count=len(server.tools))
    return f"{title}: {', '.join(names) or t('tools_none', language)}"


def _server_lines(server: ServerView, language: str) -> list[str]:
    notes = []
    if server.restarts:
        notes.append(t("tools_server_restarts", language, n=server.restarts))
    if server.error:
        notes.append(t("tools_server_error", language, error=html.escape(_shorten(server.error, 200))))
    if server.skipped:
        notes.append(t("tools_server_skipped", language, items=html.escape(_shorten("; ".join(server.skipped), 300))))
    return [f"   {note}" for note in notes]


async def _not_done(
    update: Update, ctx: RequestContext, command: str, exc: RuntimeRefused | StorageError
) -> str:
    """Tells the admin why a change did not happen; returns the audit outcome."""
    if isinstance(exc, RuntimeRefused):
        await reply(update, t(exc.key, ctx.language, **exc.values))
        return f"refused: {exc.key}"
    log.error("%s could not save: %s", command, exc)
    await reply(update, t("admin_failed", ctx.language, reason="the database did not answer"))
    return "failed: storage"


def render_chain(view: ChainView, language: str, done: str = "") -> tuple[str, InlineKeyboardMarkup]:
    """The chain as HTML and its buttons; compact (tiers only) if the full
    text would not fit in one message."""
    text = _chain_text(view, language, done, detailed=True)
    if utf16_len(text) > TEXT_LIMIT:
        text = _chain_text(view, language, done, detailed=False)
    return text, _chain_keyboard(view)


def _chain_text(view: ChainView, language: str, done: str, *, detailed: bool) -> str:
    lines = [html.escape(done), ""] if done else []
    lines.append(t("rt_models_header", language))
    for tier in view.tiers:
        lines.append("")
        lines.append(_tier_line(tier, language))
        if detailed:
            lines += [_endpoint_line(e, language) for e in tier.endpoints]
    lines += ["", t("rt_models_help", language)]
    return "\n".join(lines)


def _tier_line(tier: TierView, language: str) -> str:
    state = "" if tier.enabled else f" — ⏸ <i>{t('rt_tier_off', language)}</i>"
    name = f"<b>{html.escape(tier.name)}</b>" if tier.enabled else f"<s>{html.escape(tier.name)}</s>"
    return f"{tier.position}. {name}{state}"


def _endpoint_line(endpoint: EndpointView, language: str) -> str:
    where = f" @ {html.escape(endpoint.where)}" if endpoint.where else ""
    parts = [
        t(
            "rt_endpoint",
            language,
            weight=f"{endpoint.weight:g}",
            breaker=html.escape(endpoint.breaker),
            requests=endpoint.requests,
        )
    ]
    if endpoint.latency_p50 is not None:
        parts.append(t("rt_latency", language, seconds=f"{endpoint.latency_p50:.2f}"))
    if endpoint.errors:
        counts = ", ".join(f"{html.escape(name)} ×{count}" for name, count in sorted(endpoint.errors.items()))
        parts.append(t("rt_errors", language, errors=counts))
    else:
        parts.append(t("rt_no_errors", language))
    if endpoint.last_error and endpoint.last_error_at is not None:
        age = _age(time.time() - endpoint.last_error_at, language)
        parts.append(t("rt_last_error", language, error=html.escape(endpoint.last_error), age=age))
    return f"   • <code>{html.escape(endpoint.model)}</code>{where}\n      " + " · ".join(parts)


def _age(seconds: float, language: str) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return t("rt_age_seconds", language, n=seconds)
    if seconds < 7200:
        return t("rt_age_minutes", language, n=seconds // 60)
    if seconds < 172800:
        return t("rt_age_hours", language, n=seconds // 3600)
    return t("rt_age_days", language, n=seconds // 86400)


def _chain_keyboard(view: ChainView) -> InlineKeyboardMarkup:
    rows = []
    last = len(view.tiers)
    for tier in view.tiers:
        n = tier.position
        row = []
        if n > 1:
            row.append(InlineKeyboardButton(f"{n} ▲", callback_data=f"{PREFIX}:up:{n}:{view.version}"))
        if n < last:
            row.append(InlineKeyboardButton(f"{n} ▼", callback_data=f"{PREFIX}:down:{n}:{view.version}"))
        if tier.enabled:
            row.append(InlineKeyboardButton(f"{n} ⏸", callback_data=f"{PREFIX}:disable:{n}:{view.version}"))
        else:
            row.append(InlineKeyboardButton(f"{n} ▶", callback_data=f"{PREFIX}:enable:{n}:{view.version}"))
        rows.append(row)
    return InlineKeyboardMarkup(rows)


def _parse_button(data: str) -> tuple[ModelsAction | None, str]:
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
        return None, ""
    action = parse_models_args([parts[1], parts[2]])
    if action is None or action.verb in ("show", "order"):
        return None, ""
    return action, parts[3]


def render_reload(report: ReloadReport, language: str) -> str:
    lines = [t("rt_reload_title", language), ""]
    prompts = report.prompts
    if prompts.error is not None:
        error = html.escape(_shorten(prompts.error, PROMPT_ERROR_LIMIT))
        lines.append(t("rt_reload_prompts_failed", language, error=f"<code>{error}</code>"))
    else:
        changes = prompts.changes
        summary = _summary(language, added=changes.added, changed=changes.changed, removed=changes.removed)
        lines.append(t("rt_reload_prompts", language, summary=summary))
        if changes.unpinned:
            lines.append(t("rt_unpinned", language, items=html.escape(", ".join(changes.unpinned))))
    plugins = report.plugins
    summary = _summary(language, added=plugins.added, changed=plugins.changed, removed=plugins.removed)
    lines.append(t("rt_reload_tools", language, summary=summary, count=len(plugins.registry)))
    failed = plugins.failed
    for info in failed[:FAILED_SHOWN]:
        error = html.escape(_shorten(info.error or "", PLUGIN_ERROR_LIMIT))
        line = t("rt_plugin_failed", language, name=html.escape(info.name), error=f"<code>{error}</code>")
        if info.kept:
            line += "; " + t("rt_plugin_kept", language, tools=html.escape(_shorten(", ".join(info.tools), 300)))
        lines.append(line)
    if len(failed) > FAILED_SHOWN:
        lines.append(f"… +{len(failed) - FAILED_SHOWN}")
    return "\n".join(lines)


def _summary(language: str, *, added: tuple[str, ...], changed: tuple[str, ...], removed: tuple[str, ...]) -> str:
    parts = [
        t(key, language, items=html.escape(", ".join(items)))
        for key, items in (("rt_added", added), ("rt_changed", changed), ("rt_removed", removed))
        if items
    ]
    return "; ".join(parts) or t("rt_nothing_changed", language)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Sending ---------------------------------------------------------------------------


async def _send(update: Update, text: str, keyboard: InlineKeyboardMarkup | None) -> None:
    await reply(update, text, html=True, keyboard=keyboard)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    await answer_button(query, text)


async def _edit(query: CallbackQuery, text: str, keyboard: InlineKeyboardMarkup | None) -> None:
    await edit_after_button(query, text, html=True, keyboard=keyboard)


