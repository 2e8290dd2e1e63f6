"""What /stats and /users show, channel-agnostic: the queries, the aggregation
and the cost estimate. The Telegram rendering is in
bot/channels/telegram/stats_handlers.py, the chart in bot/admin/charts.py.

Sources:
- users: the users table (``last_seen_at`` is refreshed at most once a minute);
- turns and tokens per day and per model: ``usage_daily`` (one turn is one
  user message the bot tried to answer, failed ones included); it is kept
  when messages are pruned by retention, so it is the durable count;
- endpoint latency, errors and breaker state: the running chain (in memory,
  since the start);
- tool calls: ``tool_events``; reminders: the reminders table.

Nothing here reads or returns a secret: endpoints are shown by their display
name (``provider:model@host/path``), and anything that looks like a URL is
stripped of credentials, query and fragment before it leaves this module."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import ColumnElement, case, func, or_, select

from bot.admin.agent_stats import AgentLine, agents_since
from bot.context import strip_url_secrets
from bot.storage.admin import DayUsage, ModelUsage, UsageRepository
from bot.storage.agents import AgentRepository
from bot.storage.db import Database
from bot.storage.models import EVAL_USER_MIN, User
from bot.runtime.clock import utcnow
from bot.storage.reminders import ReminderRepository
from bot.storage.tool_events import ToolEventRepository, ToolStats

STATS_DAYS = 30  # the chart, tokens by model and tool calls cover this many UTC days
PERIODS = (1, 7, STATS_DAYS)  # today, 7 days, 30 days (each ends today, UTC)
USERS_PAGE_SIZE = 10
# A reminder this late and still active is overdue (one just due is being sent).
OVERDUE_GRACE = timedelta(minutes=1)
TOKENS_PER_PRICE_UNIT = 1_000_000

# usage_daily.model holds what the chain puts in Completion.endpoint:
# "<tier name>/<provider>:<model>". Tier names from BOT_MODELS are themselves
# "provider:model", and model names may contain "/" (OpenRouter), so the model
# part starts at the first "/" that is followed by a provider prefix.
_USAGE_MODEL = re.compile(r"^(?:(?P<tier>.*?)/)?(?P<model>(?:mistral|openai):.+)$", re.DOTALL)


class ModelHealth(Protocol):
    """What the report needs of the model service (bot.llm.service.ModelService)."""

    def health(self) -> list[dict[str, object]]: ...


# Prices and cost -------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """Price per 1M input and output tokens (the currency the admin configured)."""

    input_per_million: float
    output_per_million: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_million + tokens_out * self.output_per_million) / TOKENS_PER_PRICE_UNIT


def prices_from(configured: Mapping[str, tuple[float, float]]) -> dict[str, ModelPrice]:
    """Settings.model_prices ("provider:model" -> (input, output)) as ModelPrices."""
    return {key: ModelPrice(float(pair[0]), float(pair[1])) for key, pair in configured.items()}


def split_usage_model(stored: str) -> tuple[str | None, str]:
    """(tier, "provider:model") of a usage_daily.model value; (None, value) if
    it does not have that shape."""
    match = _USAGE_MODEL.match(stored)
    if match is None:
        return None, stored
    return match.group("tier") or None, match.group("model")


def price_for(stored_model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    _, model = split_usage_model(stored_model)
    return prices.get(model)


# URLs and secrets ------------------------------------------------------------

def endpoint_label(endpoint: str) -> str:
    """An endpoint's display name (``provider:model@host/path``) made safe to show:
    no userinfo, no query, no fragment, whatever the base URL held."""
    name, at, location = endpoint.partition("@")
    if not at:
        return strip_url_secrets(endpoint)
    location = strip_url_secrets(location)
    location = location.rsplit("@", 1)[-1]  # a "user:password@host" without a scheme
    location = re.split(r"[?#]", location, maxsplit=1)[0]
    return f"{name}@{location}"


# The report --------------------------------------------------------------------


@dataclass(frozen=True)
class UserCounts:
    total: int
    active_today: int
    active_week: int
    banned: int
    blocked: int  # users who blocked the bot (users.active is false)


@dataclass(frozen=True)
class PeriodTotals:
    """A quantity today, in the last 7 days and in the last 30 days (UTC days)."""

    today: float
    week: float
    month: float


@dataclass(frozen=True)
class ModelLine:
    model: str  # "provider:model", or "" for turns no model answered
    tier: str | None
    turns: int
    failures: int
    tokens_in: int
    tokens_out: int
    cost: float | None  # None: no price configured for this model


@dataclass(frozen=True)
class EndpointLine:
    tier: str
    endpoint: str  # display name, safe to show
    breaker: str  # closed | open | half_open
    in_flight: int
    requests: int
    successes: int
    errors: dict[str, int]
    latency_p50: float | None  # seconds, over the most recent requests
    latency_p95: float | None


@dataclass(frozen=True)
class ReminderCounts:
    pending: int  # active: waiting to fire
    overdue: int
    paused: int


@dataclass(frozen=True)
class StatsReport:
    generated_at: datetime
    users: UserCounts
    turns: PeriodTotals
    tokens: PeriodTotals
    cost: PeriodTotals | None  # None when no model price is configured
    unpriced: tuple[str, ...]  # models with usage but no price
    models: tuple[ModelLine, ...]  # last STATS_DAYS days, most tokens first
    endpoints: tuple[EndpointLine, ...]
    tools: tuple[ToolStats, ...]  # last STATS_DAYS days, busiest first
    reminders: ReminderCounts
    daily: tuple[DayUsage, ...]  # one entry per day of the last STATS_DAYS, zeros included
    agents: tuple[AgentLine, ...] = ()  # last STATS_DAYS days; empty: no turn in multi-agent mode


def fill_days(rows: Sequence[DayUsage], first: date, last: date) -> list[DayUsage]:
    """One entry per day from ``first`` to ``last``; days without usage are zeros."""
    by_day = {row.day: row for row in rows}
    span = (last - first).days + 1
    days = (first + timedelta(days=n) for n in range(max(span, 0)))
    return [by_day.get(day, DayUsage(day, 0, 0)) for day in days]


def period_totals(daily: Sequence[DayUsage], today: date, value: Callable[[DayUsage], float]) -> PeriodTotals:
    def since(days: int) -> float:
        first = today - timedelta(days=days - 1)
        return sum(value(d) for d in daily if first <= d.day <= today)

    return PeriodTotals(*(since(days) for days in PERIODS))


def model_lines(usage: Sequence[ModelUsage], prices: Mapping[str, ModelPrice]) -> list[ModelLine]:
    lines = []
    for row in usage:
        tier, model = split_usage_model(row.model) if row.model else (None, "")
        price = prices.get(model) if model else None
        cost = price.cost(row.tokens_in, row.tokens_out) if price else None
        lines.append(ModelLine(model, tier, row.turns, row.failures, row.tokens_in, row.tokens_out, cost))
    return lines


def total_cost(usage: Sequence[ModelUsage], prices: Mapping[str, ModelPrice]) -> float:
    return sum(line.cost or 0.0 for line in model_lines(usage, prices))


def endpoint_lines(health: Sequence[Mapping[str, Any]]) -> list[EndpointLine]:
    """ModelService.health() snapshots as typed lines, endpoint names made safe."""

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) else None

    return [
        EndpointLine(
            tier=str(item.get("tier", "")),
            endpoint=endpoint_label(str(item.get("endpoint", ""))),
            breaker=str(item.get("breaker", "")),
            in_flight=int(item.get("in_flight", 0) or 0),
            requests=int(item.get("requests", 0) or 0),
            successes=int(item.get("successes", 0) or 0),
            errors={str(k): int(v) for k, v in dict(item.get("errors") or {}).items()},
            latency_p50=number(item.get("latency_p50")),
            latency_p95=number(item.get("latency_p95")),
        )
        for item in health
    ]


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class AdminStats:
    """Builds the /stats report from the database and the running chain."""

    def __init__(
        self,
        db: Database,
        *,
        usage: UsageRepository,
        tool_events: ToolEventRepository,
        reminders: ReminderRepository,
        models: ModelHealth,
        prices: Mapping[str, ModelPrice],
        now: Callable[[], datetime] = utcnow,
        agents: AgentRepository | None = None,
    ) -> None:
        self._db = db
        self._agents = agents
        self._usage = usage
        self._tool_events = tool_events
        self._reminders = reminders
        self._models = models
        self._prices = dict(prices)
        self._now = now

    async def report(self) -> StatsReport:
        now = self._now()
        today = now.astimezone(timezone.utc).date()
        first = today - timedelta(days=STATS_DAYS - 1)
        daily = fill_days(await self._usage.per_day(first), first, today)
        per_model = await self._usage.per_model(first)
        cost, unpriced = await self._cost(today, per_model)
        reminders = await self._reminders.counts(overdue_before=now - OVERDUE_GRACE)
        return StatsReport(
            generated_at=now,
            users=await self.user_counts(today),
            turns=period_totals(daily, today, lambda d: d.turns),
            tokens=period_totals(daily, today, lambda d: d.tokens),
            cost=cost,
            unpriced=unpriced,
            models=tuple(model_lines(per_model, self._prices)),
            endpoints=tuple(endpoint_lines(self._models.health())),
            tools=tuple(await self._tool_events.summary(day_start(first))),
            reminders=ReminderCounts(
                pending=reminders.get("active", 0), overdue=reminders.get("overdue", 0), paused=reminders.get("paused", 0)
            ),
            daily=tuple(daily),
            agents=tuple(await self._agent_lines(day_start(first))),
        )

    async def _agent_lines(self, since: datetime) -> list[AgentLine]:
        if self._agents is None:
            return []
        return await agents_since(self._agents, since, lambda model: price_for(model, self._prices))

    async def _cost(self, today: date, month: Sequence[ModelUsage]) -> tuple[PeriodTotals | None, tuple[str, ...]]:
        if not self._prices:
            return None, ()
        lines = model_lines(month, self._prices)
        unpriced = tuple(sorted({line.model for line in lines if line.model and line.cost is None}))
        per_period = []
        for days in PERIODS[:-1]:
            usage = await self._usage.per_model(today - timedelta(days=days - 1))
            per_period.append(total_cost(usage, self._prices))
        per_period.append(sum(line.cost or 0.0 for line in lines))
        return PeriodTotals(*per_period), unpriced

    async def user_counts(self, today: date) -> UserCounts:
        def counted(condition: ColumnElement[bool]) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = select(
            func.count(),
            counted(User.last_seen_at >= day_start(today)),
            counted(User.last_seen_at >= day_start(today - timedelta(days=PERIODS[1] - 1))),
            counted(User.role == "banned"),
            counted(User.active.is_(False)),
        ).select_from(User).where(User.id < EVAL_USER_MIN)
        async with self._db.reading() as s:
            row = (await s.execute(query)).one()
        return UserCounts(*(int(value or 0) for value in row))


# /users ------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    id: int
    first_name: str
    last_name: str | None
    username: str | None
    role: str
    allowed: bool
    active: bool
    last_seen_at: datetime


@dataclass(frozen=True)
class UserPage:
    query: str
    rows: tuple[UserRow, ...]
    page: int  # 0-based, clamped to the pages there are
    pages: int  # at least 1
    total: int


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _case_variants(text: str) -> set[str]:
    # SQLite's LIKE and lower() fold ASCII only, so "анна" would miss "Анна";
    # trying the usual spellings covers how names are written. PostgreSQL's
    # ILIKE folds every script anyway.
    return {text, text.lower(), text.upper(), text.capitalize(), text.title()}


def user_filter(query: str) -> ColumnElement[bool] | None:
    """Matches the name, the username (with or without "@") or the id."""
    text = query.strip()
    if not text:
        return None
    bare = text.removeprefix("@") or text
    conditions: list[ColumnElement[bool]] = []
    for variant in _case_variants(bare):
        pattern = f"%{_like_escaped(variant)}%"
        for column in (User.first_name, User.last_name, User.username):
            conditions.append(column.ilike(pattern, escape="\\"))
    if re.fullmatch(r"-?\d{1,19}", bare) and abs(int(bare)) < 2**63:
        conditions.append(User.id == int(bare))
    return or_(*conditions)


class UserDirectory:
    """Users for /users: newest activity first, paged, optionally searched."""

    def __init__(self, db: Database, page_size: int = USERS_PAGE_SIZE) -> None:
        self._db = db
        self.page_size = page_size

    async def page(self, query: str, page: int) -> UserPage:
        condition = user_filter(query)
        counting = select(func.count()).select_from(User).where(User.id < EVAL_USER_MIN)
        listing = select(User).where(User.id < EVAL_USER_MIN).order_by(User.last_seen_at.desc(), User.id)
        if condition is not None:
            counting, listing = counting.where(condition), listing.where(condition)
        async with self._db.reading() as s:
            total = int((await s.execute(counting)).scalar_one())
            pages = max(1, -(-total // self.page_size))
            page = min(max(page, 0), pages - 1)
            users = (await s.execute(listing.offset(page * self.page_size).limit(self.page_size))).scalars().all()
        rows = tuple(
            UserRow(u.id, u.first_name, u.last_name, u.username, u.role, u.allowed, u.active, u.last_seen_at)
            for u in users
        )
        return UserPage(query.strip(), rows, page, pages, total)
