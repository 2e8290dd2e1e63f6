"""SQL of the agents feature (bot/agents/): chats' pinned agents, the turns
each agent answered, and orchestrators' plans."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select

from bot.runtime.clock import utcnow
from bot.storage.db import Database, insert_for
from bot.storage.models import EVAL_USER_MIN, AgentPlan, AgentTurn, ChatAgent


@dataclass(frozen=True)
class AgentTurnRecord:
    request_id: str
    user_id: int
    chat_id: int
    agent: str
    reason: str
    switched: bool
    status: str
    latency_ms: int
    tokens_in: int
    tokens_out: int
    model: str | None


@dataclass(frozen=True)
class AgentUsage:
    """One agent's turns since a moment, per model that answered (for cost)."""

    agent: str
    model: str | None
    turns: int
    failures: int
    latency_ms_total: int
    tokens_in: int
    tokens_out: int
    switches: int


@dataclass(frozen=True)
class StoredPlan:
    request_id: str
    steps: list[dict[str, Any]]
    status: str


# An evaluation run writes agent turns of its eval users into the same table
# (erased when each task ends); /stats must not count them meanwhile.
_NOT_EVAL = AgentTurn.user_id < EVAL_USER_MIN


class AgentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Pins -------------------------------------------------------------------

    async def pins(self) -> dict[int, str]:
        async with self._db.reading() as s:
            return {chat: agent for chat, agent in await s.execute(select(ChatAgent.chat_id, ChatAgent.agent))}

    async def pin(self, chat_id: int, agent: str, *, by: int | None) -> None:
        async with self._db.session() as s:
            statement = insert_for(s)(ChatAgent).values(chat_id=chat_id, agent=agent, set_by=by, updated_at=utcnow())
            # An upsert: two /agent commands in one chat at once cannot collide on the key.
            await s.execute(
                statement.on_conflict_do_update(
                    index_elements=["chat_id"],
                    set_={name: statement.excluded[name] for name in ("agent", "set_by", "updated_at")},
                )
            )

    async def unpin(self, chat_id: int) -> None:
        async with self._db.session() as s:
            await s.execute(delete(ChatAgent).where(ChatAgent.chat_id == chat_id))

    # Turns ------------------------------------------------------------------

    async def add_turns(self, records: Sequence[AgentTurnRecord]) -> None:
        if not records:
            return
        now = utcnow()
        async with self._db.session() as s:
            s.add_all(AgentTurn(created_at=now, **record.__dict__) for record in records)

    async def usage_since(self, since: datetime) -> list[AgentUsage]:
        failed = case((AgentTurn.status == "failed", 1), else_=0)
        switched = case((AgentTurn.switched, 1), else_=0)
        query = (
            select(
                AgentTurn.agent,
                AgentTurn.model,
                func.count(),
                func.coalesce(func.sum(failed), 0),
                func.coalesce(func.sum(AgentTurn.latency_ms), 0),
                func.coalesce(func.sum(AgentTurn.tokens_in), 0),
                func.coalesce(func.sum(AgentTurn.tokens_out), 0),
                func.coalesce(func.sum(switched), 0),
            )
            .where(AgentTurn.created_at >= since, _NOT_EVAL)
            .group_by(AgentTurn.agent, AgentTurn.model)
        )
        async with self._db.reading() as s:
            return [AgentUsage(*(row[:2]), *(int(v) for v in row[2:])) for row in await s.execute(query)]

    async def reasons_since(self, since: datetime) -> dict[tuple[str, str], int]:
        """How many turns each (agent, routing reason) had."""
        query = (
            select(AgentTurn.agent, AgentTurn.reason, func.count())
            .where(AgentTurn.created_at >= since, _NOT_EVAL)
            .group_by(AgentTurn.agent, AgentTurn.reason)
        )
        async with self._db.reading() as s:
            return {(agent, reason): int(n) for agent, reason, n in await s.execute(query)}

    # Plans ------------------------------------------------------------------

    async def plan(self, request_id: str) -> StoredPlan | None:
        async with self._db.reading() as s:
            row = await s.get(AgentPlan, request_id)
            return StoredPlan(row.request_id, json.loads(row.payload), row.status) if row is not None else None

    async def save_plan(
        self, request_id: str, *, user_id: int, chat_id: int, steps: list[dict[str, Any]], status: str
    ) -> None:
        payload = json.dumps(steps, ensure_ascii=False)
        async with self._db.session() as s:
            row = await s.get(AgentPlan, request_id)
            if row is None:
                now = utcnow()
                s.add(
                    AgentPlan(
                        request_id=request_id, user_id=user_id, chat_id=chat_id, payload=payload, status=status,
                        created_at=now, updated_at=now,
                    )
                )
            else:
                row.payload, row.status, row.updated_at = payload, status, utcnow()
