"""The agents section of /stats: each agent's turns, failures, latency,
tokens, cost, routing reasons and switches over the report's period, from
``agent_turns`` (bot/agents/desk.py writes one row per turn answered in
multi-agent mode). Channel-agnostic; the Telegram rendering is in
bot/channels/telegram/stats_handlers.py, the chart in bot/admin/agent_chart.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from bot.storage.agents import AgentRepository, AgentUsage

if TYPE_CHECKING:
    from bot.admin.stats import ModelPrice

PriceOf = Callable[[str], "ModelPrice | None"]  # a stored "tier/provider:model" label -> its price


@dataclass(frozen=True)
class AgentLine:
    agent: str
    turns: int
    failures: int
    mean_latency_ms: float
    tokens_in: int
    tokens_out: int
    cost: float | None  # over its models that have a price; None: none of them has one
    switches: int  # turns where another agent had answered the chat's previous turn
    reasons: dict[str, int] = field(default_factory=dict)  # why it was chosen -> turns, most first


def agent_lines(
    usage: Sequence[AgentUsage], reasons: Mapping[tuple[str, str], int], price_of: PriceOf
) -> list[AgentLine]:
    """One line per agent (usage comes per agent and model), busiest first."""
    by_agent: dict[str, list[AgentUsage]] = defaultdict(list)
    for row in usage:
        by_agent[row.agent].append(row)
    lines = [_line(agent, rows, _reasons_of(agent, reasons), price_of) for agent, rows in by_agent.items()]
    return sorted(lines, key=lambda line: (-line.turns, line.agent))


def _line(agent: str, rows: Sequence[AgentUsage], reasons: dict[str, int], price_of: PriceOf) -> AgentLine:
    turns = sum(r.turns for r in rows)
    costs = [price.cost(r.tokens_in, r.tokens_out) for r in rows if r.model and (price := price_of(r.model))]
    return AgentLine(
        agent=agent,
        turns=turns,
        failures=sum(r.failures for r in rows),
        mean_latency_ms=sum(r.latency_ms_total for r in rows) / turns if turns else 0.0,
        tokens_in=sum(r.tokens_in for r in rows),
        tokens_out=sum(r.tokens_out for r in rows),
        cost=sum(costs) if costs else None,
        switches=sum(r.switches for r in rows),
        reasons=reasons,
    )


def _reasons_of(agent: str, reasons: Mapping[tuple[str, str], int]) -> dict[str, int]:
    mine = [(reason, n) for (name, reason), n in reasons.items() if name == agent]
    return dict(sorted(mine, key=lambda item: (-item[1], item[0])))


async def agents_since(store: AgentRepository, since: datetime, price_of: PriceOf) -> list[AgentLine]:
    """The agents section; empty when no agent answered since then, and then
    the reasons query is skipped (single-agent mode pays one indexed query)."""
    usage = await store.usage_since(since)
    if not usage:
        return []
    return agent_lines(usage, await store.reasons_since(since), price_of)
