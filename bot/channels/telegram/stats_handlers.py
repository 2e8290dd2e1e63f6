"""Telegram side of /stats, /users and /health (admins only, private chats
only: the answers hold other users' data and the bot's internals).

/stats sends the numbers as HTML text and the 30-day chart as a photo; the
chart is drawn in a worker thread while the text is being sent. /users pages
with inline buttons whose callback data carries the page and the search
("usr:<page>:<query>"), so they keep working after a restart. Every value put
into a message is HTML-escaped, and every message passes through a redactor
that removes known secrets, as the last line of defence."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

import bot.admin.stats_strings  # noqa: F401  (registers the strings)
from bot.context import Redactor
from bot.channels.telegram.replies import answer_button, edit_after_button
from bot.admin.agent_chart import AgentChartLabels, render_agents_chart
from bot.admin.agent_stats import AgentLine
from bot.admin.charts import ChartLabels, render_usage_chart
from bot.admin.health import HealthMonitor, HealthReport
from bot.admin.stats import (
    AdminStats,
    EndpointLine,
    ModelLine,
    PeriodTotals,
    StatsReport,
    UserDirectory,
    UserPage,
    UserRow,
)
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.context import RequestContext
from bot.runtime.events import EventBus
from bot.i18n import t
from bot.tools.mcp.views import ServerState

if TYPE_CHECKING:
    from bot.scale.state import ScaledState

log = logging.getLogger(__name__)

PREFIX = "usr"
MAX_QUERY_BYTES = 40  # so "usr:<page>:<query>" stays within Telegram's 64 bytes of callback data
MESSAGE_LIMIT = 4000  # below Telegram's 4096, with room to spare
LIST_LIMIT = 8  # models and tools shown; the rest are counted
ENDPOINT_LIMIT = 12
NAME_CHARS = 40
_PAGE_DATA = re.compile(rf"^{PREFIX}:(\d{{1,6}}):(.*)$", re.DOTALL)


# Formatting ------------------------------------------------------------------


def esc(value: object) -> str:
    return html.escape(str(value), quote=False)


def fmt_int(value: float, language: str) -> str:
    text = f"{int(round(value)):,}"
    return text.replace(",", "\u00a0") if language.startswith("ru") else text


def fmt_cost(value: float) -> str:
    if value == 0:
        return "$0"
    if value < 0.01:
        return f"${value:.4f}"
    if value < 1000:
        return f"${value:,.2f}"
    return f"${value:,.0f}"


def fmt_bytes(value: int | None, language: str) -> str:
    if value is None:
        return t("stats_unknown", language)
    units = t("stats_unit_bytes", language).split()
    size, unit = float(value), 0
    while size >= 1024 and unit < len(units) - 1:
        size, unit = size / 1024, unit + 1
    return f"{size:.0f} {units[unit]}" if unit == 0 else f"{size:.1f} {units[unit]}"


def fmt_seconds(value: float | None, language: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} {t('stats_unit_seconds', language)}"


def fmt_duration(seconds: float, language: str) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return t("stats_unit_duration", language, days=days, hours=hours, minutes=minutes)


def fmt_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def join_messages(lines: Sequence[str], limit: int = MESSAGE_LIMIT) -> list[str]:
    """Lines grouped into messages of at most ``limit`` characters. Each line
    is complete HTML on its own, so splitting between lines is always safe."""
    messages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = line if len(line) <= limit else line[: limit - 1] + "…"
        if current and size + len(line) + 1 > limit:
            messages.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        messages.append("\n".join(current))
    return messages


# /stats ----------------------------------------------------------------------


def _periods(key: str, totals: PeriodTotals, language: str, fmt: Any = None) -> str:
    show = fmt or (lambda v: fmt_int(v, language))
    return t(key, language, today=show(totals.today), week=show(totals.week), month=show(totals.month))


def _capped(lines: list[str], shown: int, language: str) -> list[str]:
    if not lines:
        return [t("stats_none", language)]
    extra = len(lines) - shown
    return lines[:shown] + ([t("stats_more", language, count=extra)] if extra > 0 else [])


def _model_line(line: ModelLine, language: str) -> str:
    name = line.model or t("stats_no_answer", language)
    if line.tier and line.tier != line.model:
        name = f"{name} [{line.tier}]"
    return t(
        "stats_model_line",
        language,
        model=f"<code>{esc(name)}</code>",
        turns=fmt_int(line.turns, language),
        failures=fmt_int(line.failures, language),
        tokens_in=fmt_int(line.tokens_in, language),
        tokens_out=fmt_int(line.tokens_out, language),
        cost=f" · {fmt_cost(line.cost)}" if line.cost is not None else "",
    )


def _endpoint_line(line: EndpointLine, language: str) -> str:
    errors = ", ".join(f"{esc(name)} ×{count}" for name, count in sorted(line.errors.items())) or "0"
    return t(
        "stats_endpoint_line",
        language,
        endpoint=f"<code>{esc(line.endpoint)}</code>",
        tier=esc(line.tier),
        breaker=t(f"stats_breaker_{line.breaker}", language) if line.breaker in ("closed", "open", "half_open") else esc(line.breaker),
        requests=fmt_int(line.requests, language),
        in_flight=fmt_int(line.in_flight, language),
        p50=fmt_seconds(line.latency_p50, language),
        p95=fmt_seconds(line.latency_p95, language),
        errors=errors,
    )


def stats_lines(report: StatsReport, language: str) -> list[str]:
    users = report.users
    lines = [
        t("stats_title", language, time=fmt_time(report.generated_at)),
        "",
        t(
            "stats_users",
            language,
            total=fmt_int(users.total, language),
            today=fmt_int(users.active_today, language),
            week=fmt_int(users.active_week, language),
            banned=fmt_int(users.banned, language),
            blocked=fmt_int(users.blocked, language),
        ),
        _periods("stats_turns", report.turns, language),
        _periods("stats_tokens", report.tokens, language),
    ]
    if report.cost is None:
        lines.append(t("stats_cost_off", language))
    else:
        cost = _periods("stats_cost", report.cost, language, fmt_cost)
        if report.unpriced:
            models = ", ".join(f"<code>{esc(m)}</code>" for m in report.unpriced)
            cost += f" ({t('stats_cost_unpriced', language, models=models)})"
        lines.append(cost)
    r = report.reminders
    lines.append(
        t(
            "stats_reminders",
            language,
            pending=fmt_int(r.pending, language),
            overdue=fmt_int(r.overdue, language),
            paused=fmt_int(r.paused, language),
        )
    )
    lines += ["", t("stats_models_header", language)]
    lines += _capped([_model_line(m, language) for m in report.models], LIST_LIMIT, language)
    lines += ["", t("stats_endpoints_header", language)]
    lines += _capped([_endpoint_line(e, language) for e in report.endpoints], ENDPOINT_LIMIT, language)
    lines += ["", t("stats_tools_header", language)]
    tools = [
        t(
            "stats_tool_line",
            language,
            tool=f"<code>{esc(tool.tool)}</code>",
            calls=fmt_int(tool.calls, language),
            failures=fmt_int(tool.failures, language),
            timeouts=fmt_int(tool.timeouts, language),
            avg=fmt_int(tool.avg_ms, language),
        )
        for tool in report.tools
    ]
    lines += _capped(tools, LIST_LIMIT, language)
    if report.agents:  # absent, not "none yet": single-agent mode shows nothing new
        lines += ["", t("stats_agents_header", language)]
        lines += _capped([_agent_line(a, language) for a in report.agents], LIST_LIMIT, language)
    return lines


def _agent_line(line: AgentLine, language: str) -> str:
    reasons = ", ".join(f"{_reason(reason, language)} {fmt_int(n, language)}" for reason, n in line.reasons.items())
    return t(
        "stats_agent_line",
        language,
        agent=f"<code>{esc(line.agent)}</code>",
        turns=fmt_int(line.turns, language),
        failures=fmt_int(line.failures, language),
        latency=fmt_seconds(line.mean_latency_ms / 1000, language),
        tokens_in=fmt_int(line.tokens_in, language),
        tokens_out=fmt_int(line.tokens_out, language),
        cost=fmt_cost(line.cost) if line.cost is not None else "—",
        reasons=reasons or "—",
        switches=fmt_int(line.switches, language),
    )


_REASONS = ("mention", "pinned", "rule", "classifier", "default", "unsure", "timeout", "error")


def _reason(reason: str, language: str) -> str:
    # A reason the router gains later is shown as stored rather than dropped.
    return t(f"stats_agent_reason_{reason}", language) if reason in _REASONS else esc(reason)


def chart_labels(language: str) -> ChartLabels:
    return ChartLabels(
        title=t("stats_chart_title", language),
        turns=t("stats_chart_turns", language),
        tokens=t("stats_chart_tokens", language),
    )


def agents_chart_labels(language: str) -> AgentChartLabels:
    return AgentChartLabels(
        title=t("stats_agents_chart_title", language),
        turns=t("stats_agents_chart_turns", language),
        failed=t("stats_agents_chart_failed", language),
        latency=t("stats_agents_chart_latency", language),
    )


# /users ----------------------------------------------------------------------


def _user_line(row: UserRow, language: str) -> str:
    name = " ".join(part for part in (row.first_name, row.last_name) if part).strip() or "—"
    if len(name) > NAME_CHARS:
        name = name[: NAME_CHARS - 1] + "…"
    role = t(f"users_role_{row.role}", language) if row.role in ("admin", "user", "banned") else row.role
    return t(
        "users_line",
        language,
        id=row.id,
        name=esc(name),
        username=f" @{esc(row.username)}" if row.username else "",
        role=esc(role),
        allowed=t("users_allowed" if row.allowed else "users_not_allowed", language),
        active=t("users_active" if row.active else "users_blocked", language),
        seen=fmt_time(row.last_seen_at),
    )


def users_text(page: UserPage, language: str) -> str:
    if not page.rows:
        return t("users_none", language, query=esc(page.query)) if page.query else t("users_empty", language)
    search = t("users_search", language, query=esc(page.query)) if page.query else ""
    header = t(
        "users_header", language, search=search, total=fmt_int(page.total, language), page=page.page + 1, pages=page.pages
    )
    return "\n".join([header, ""] + [_user_line(row, language) for row in page.rows])


def page_data(page: int, query: str) -> str:
    return f"{PREFIX}:{page}:{query}"


def parse_page_data(data: str) -> tuple[int, str] | None:
    """(page, query) from callback data, or None if it is not ours or malformed."""
    match = _PAGE_DATA.match(data)
    if match is None or len(match.group(2).encode()) > MAX_QUERY_BYTES:
        return None
    return int(match.group(1)), match.group(2)


def users_keyboard(page: UserPage) -> InlineKeyboardMarkup | None:
    buttons = []
    if page.page > 0:
        buttons.append(InlineKeyboardButton("◀", callback_data=page_data(page.page - 1, page.query)))
    if page.page < page.pages - 1:
        buttons.append(InlineKeyboardButton("▶", callback_data=page_data(page.page + 1, page.query)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


# /health ---------------------------------------------------------------------


def health_lines(report: HealthReport, language: str) -> list[str]:
    def count(value: int | None) -> str:
        return t("stats_unknown", language) if value is None else fmt_int(value, language)

    q = report.queues
    lines = [
        t("health_title", language, time=fmt_time(report.generated_at)),
        "",
        t("health_version", language, version=esc(report.version), uptime=fmt_duration(report.uptime, language)),
        t("health_database", language, kind=esc(report.database), size=fmt_bytes(report.database_bytes, language)),
    ]
    if report.memory is None:
        lines.append(t("health_memory", language, size=t("stats_unknown", language)))
    else:
        key = "health_memory_peak" if report.memory.peak else "health_memory"
        lines.append(t(key, language, size=fmt_bytes(report.memory.bytes, language)))
    lines.append(
        t(
            "health_queues",
            language,
            tasks=count(q.background_tasks),
            tools=count(q.tool_calls),
            capacity=count(q.tool_capacity),
            waiting=count(q.updates_waiting),
            handling=count(q.updates_in_progress),
        )
    )
    states = " · ".join(
        f"{t(f'stats_breaker_{state}', language) if state in ('closed', 'open', 'half_open') else esc(state)} {n}"
        for state, n in sorted(report.breakers.items())
    )
    lines.append(t("health_models", language, endpoints=report.endpoints, states=states or "—"))
    embedder = report.embedder
    if embedder is not None:
        detail = {"name": esc(embedder.detail)} if embedder.state == "ready" else {"reason": esc(embedder.detail)}
        lines.append(t(f"health_embedder_{embedder.state}", language, **detail))
    for server in report.mcp_servers:
        key = "health_mcp_error" if server.error and server.state is not ServerState.READY else "health_mcp"
        lines.append(
            t(key, language, name=esc(server.name), state=esc(server.state.value), tools=len(server.tools),
              error=esc((server.error or "")[:200]))
        )
    if report.scaled is not None:
        lines += scaled_lines(report.scaled, language)
    recovered = report.recovered
    if recovered is not None and recovered.total:
        lines.append(
            t("health_recovered", language, total=recovered.total, answered=recovered.answered,
              noted=recovered.noted, failed=recovered.failed, replayed=recovered.replayed)
        )
    error = report.last_error
    if error is None:
        lines.append(t("health_no_error", language))
    else:
        lines.append(
            t(
                "health_last_error",
                language,
                time=fmt_time(error.at),
                where=esc(error.where),
                summary=f"<code>{esc(error.summary)}</code>",
                total=fmt_int(report.errors_total, language),
            )
        )
    return lines


def scaled_lines(state: ScaledState, language: str) -> list[str]:
    """The scaled mode as this worker sees it: itself, the leader, the partitions."""
    leader = esc(state.leader) if state.leader else t("health_scaled_no_leader", language)
    held = ", ".join(name.rsplit(".", 1)[-1] for name in state.held) or "—"
    busiest = (
        t("health_scaled_busiest", language, queue=esc(state.busiest[0]), n=fmt_int(state.busiest[1], language))
        if state.busiest
        else ""
    )
    return [
        t("health_scaled_worker", language, name=esc(state.worker), leads=t(
            "health_scaled_leads" if state.leads else "health_scaled_follows", language), leader=leader),
        t("health_scaled_partitions", language, workers=state.workers, partitions=state.partitions, held=held),
        t("health_scaled_queues", language, waiting=fmt_int(state.waiting, language), busiest=busiest,
          handled=fmt_int(state.handled, language), duplicates=fmt_int(state.duplicates, language),
          resumed=fmt_int(state.resumed, language)),
    ]


# The feature -----------------------------------------------------------------


class StatsCommands(AdminCommands):
    """/stats, /users (with its page buttons) and /health."""

    def __init__(
        self,
        events: EventBus,
        *,
        stats: AdminStats,
        users: UserDirectory,
        health: HealthMonitor,
        secrets: Sequence[str],
    ) -> None:
        super().__init__(events)
        self._stats = stats
        self._users = users
        self._health = health
        self._redact = Redactor(secrets)
        self._application: Application | None = None

    def register_admin(self, application: Application) -> None:
        self._application = application
        self.command(application, "stats", self._on_stats)
        self.command(application, "users", self._on_users)
        self.command(application, "health", self._on_health)
        application.add_handler(CallbackQueryHandler(self._on_users_button, pattern=rf"^{PREFIX}:"))

    # Commands --------------------------------------------------------------

    async def _on_stats(self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]) -> str:
        if args:
            return await self.usage(update, ctx, "/stats")
        if not await self._private(update, ctx):
            return "refused: not a private chat"
        report = await self._stats.report()
        language = ctx.language
        # Draw while the text goes out; the charts need only the report.
        chart, agents_chart, _ = await asyncio.gather(
            self._draw(report, language),
            self._draw_agents(report, language),
            self._send(update, stats_lines(report, language)),
        )
        if chart is not None:
            await self._send_chart(update, chart, t("stats_chart_caption", language))
        if agents_chart is not None:
            await self._send_chart(update, agents_chart, t("stats_agents_chart_caption", language), "agents.png")
        if chart is None or (report.agents and agents_chart is None):
            await self._send(update, [t("stats_chart_failed", language)])
            return "stats shown without the chart"
        return "stats shown"

    async def _on_users(self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]) -> str:
        query = " ".join(args).strip()
        if len(query.encode()) > MAX_QUERY_BYTES:
            await reply(update, t("admin_usage", ctx.language, usage=t("users_usage", ctx.language, limit=MAX_QUERY_BYTES)))
            return "usage shown"
        if not await self._private(update, ctx):
            return "refused: not a private chat"
        page = await self._users.page(query, 0)
        await self._send(update, [users_text(page, ctx.language)], users_keyboard(page))
        return f"{page.total} users listed"

    async def _on_health(self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]) -> str:
        if args:
            return await self.usage(update, ctx, "/health")
        if not await self._private(update, ctx):
            return "refused: not a private chat"
        application = self._application
        report = await self._health.report(
            updates_waiting=application.update_queue.qsize() if application else None,
            updates_in_progress=application.update_processor.current_concurrent_updates if application else None,
        )
        await self._send(update, health_lines(report, ctx.language))
        return "health shown"

    # The page buttons ------------------------------------------------------

    async def _on_users_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.admin_button(update)
        if pressed is None:
            return
        query, ctx = pressed
        if not ctx.is_private:
            await _answer(query)  # stops the spinner and says nothing
            return
        parsed = parse_page_data(query.data or "")
        if parsed is None:  # forged, or from a client that mangled it
            await _answer(query, t("users_button_stale", ctx.language))
            return
        page = await self._users.page(parsed[1], parsed[0])
        await _answer(query)
        await _edit(query, self._redact(users_text(page, ctx.language)), users_keyboard(page))

    # Helpers ---------------------------------------------------------------

    async def _private(self, update: Update, ctx: RequestContext) -> bool:
        if ctx.is_private:
            return True
        await reply(update, t("stats_private_only", ctx.language))
        return False

    async def _draw(self, report: StatsReport, language: str) -> bytes | None:
        try:
            return await asyncio.to_thread(render_usage_chart, report.daily, chart_labels(language))
        except Exception:  # noqa: BLE001 - the numbers still go out without the chart
            log.exception("could not draw the stats chart")
            return None

    async def _draw_agents(self, report: StatsReport, language: str) -> bytes | None:
        """The agents chart; None without agent turns (nothing to compare) or when drawing failed."""
        if not report.agents:
            return None
        try:
            return await asyncio.to_thread(render_agents_chart, report.agents, agents_chart_labels(language))
        except Exception:  # noqa: BLE001 - the numbers still go out without the chart
            log.exception("could not draw the agents chart")
            return None

    async def _send(self, update: Update, lines: Sequence[str], markup: InlineKeyboardMarkup | None = None) -> None:
        message = update.effective_message
        if message is None:
            return
        chunks = join_messages(lines)
        for number, chunk in enumerate(chunks, 1):
            try:
                await message.reply_text(
                    self._redact(chunk),
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup if number == len(chunks) else None,
                    do_quote=False,
                )
            except TelegramError as exc:
                log.error("could not send an admin answer in chat %s: %s", message.chat.id, exc)
                return

    async def _send_chart(self, update: Update, png: bytes, caption: str, filename: str = "stats.png") -> None:
        message = update.effective_message
        if message is None:
            return
        try:
            await message.reply_photo(png, caption=caption, filename=filename, do_quote=False)
        except TelegramError as exc:
            log.error("could not send the stats chart to chat %s: %s", message.chat.id, exc)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    await answer_button(query, text)


async def _edit(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    await edit_after_button(query, text, html=True, keyboard=markup)


