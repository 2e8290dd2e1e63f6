"""Usage per day and the audit log: written in batches from the event bus,
read by /stats, /audit and the daily token budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import func, insert, select

from bot.runtime.events import AdminAction, TurnFinished
from bot.storage.db import Database, dialect_insert
from bot.storage.models import AuditEntry, UsageDaily, table_of

UsageKey = tuple[date, int, str]
USAGE_COUNTS = ("turns", "failures", "tokens_in", "tokens_out")


@dataclass(frozen=True)
class DayUsage:
    day: date
    turns: int
    tokens: int


@dataclass(frozen=True)
class ModelUsage:
    model: str
    turns: int
    failures: int
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class AuditRecord:
    id: int
    created_at: datetime
    admin_id: int
    action: str
    arguments: str
    outcome: str


def usage_day(at: datetime) -> date:
    """The UTC day a turn counts towards (daily budgets reset at 00:00 UTC)."""
    return at.astimezone(timezone.utc).date()


def _usage_upsert(dialect: str) -> Any:
    """Adds a row's counts to the stored ones (built once: building it cost
    as much CPU as running it)."""
    table = table_of(UsageDaily)
    statement = dialect_insert(dialect)(table)
    return statement.on_conflict_do_update(
        index_elements=["day", "user_id", "model"],
        set_={name: table.c[name] + statement.excluded[name] for name in USAGE_COUNTS},
    )


def _aggregate(events: Sequence[TurnFinished]) -> dict[UsageKey, Counter[str]]:
    totals: dict[UsageKey, Counter[str]] = {}
    for event in events:
        key = (usage_day(event.at), event.user_id, event.model or "")
        counter = totals.setdefault(key, Counter())
        counter["turns"] += 1
        counter["failures"] += event.status == "failed"
        counter["tokens_in"] += event.tokens_in
        counter["tokens_out"] += event.tokens_out
    return totals


class UsageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._add = _usage_upsert(db.dialect)

    async def add_turns(self, events: Sequence[TurnFinished]) -> None:
        """Adds a batch of turns to the per-day counters: one upsert per
        (day, user, model), however many turns the batch holds."""
        totals = _aggregate(events)
        if not totals:
            return
        rows = [
            {"day": day, "user_id": user_id, "model": model, **{name: int(counts[name]) for name in USAGE_COUNTS}}
            # Sorted: concurrent writers (the scaled mode's workers) lock rows in one order.
            for (day, user_id, model), counts in sorted(totals.items())
        ]
        async with self._db.writing() as conn:
            await conn.execute(self._add, rows)

    async def tokens_on(self, user_id: int, day: date) -> int:
        query = select(func.coalesce(func.sum(UsageDaily.tokens_in + UsageDaily.tokens_out), 0)).where(
            UsageDaily.user_id == user_id, UsageDaily.day == day
        )
        async with self._db.reading() as s:
            return int((await s.execute(query)).scalar_one())

    async def per_day(self, since: date) -> list[DayUsage]:
        """Turns and tokens per day since ``since`` (days without turns are absent)."""
        query = (
            select(UsageDaily.day, func.sum(UsageDaily.turns), func.sum(UsageDaily.tokens_in + UsageDaily.tokens_out))
            .where(UsageDaily.day >= since)
            .group_by(UsageDaily.day)
            .order_by(UsageDaily.day)
        )
        async with self._db.reading() as s:
            rows = (await s.execute(query)).all()
        return [DayUsage(day, int(turns or 0), int(tokens or 0)) for day, turns, tokens in rows]

    async def per_model(self, since: date) -> list[ModelUsage]:
        query = (
            select(
                UsageDaily.model,
                func.sum(UsageDaily.turns),
                func.sum(UsageDaily.failures),
                func.sum(UsageDaily.tokens_in),
                func.sum(UsageDaily.tokens_out),
            )
            .where(UsageDaily.day >= since)
            .group_by(UsageDaily.model)
            .order_by(func.sum(UsageDaily.tokens_in + UsageDaily.tokens_out).desc(), UsageDaily.model)
        )
        async with self._db.reading() as s:
            rows = (await s.execute(query)).all()
        return [
            ModelUsage(str(model), int(turns or 0), int(fails or 0), int(t_in or 0), int(t_out or 0))
            for model, turns, fails, t_in, t_out in rows
        ]


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_many(self, actions: Sequence[AdminAction]) -> None:
        if not actions:
            return
        rows = [
            {
                "created_at": a.at,
                "admin_id": a.admin_id,
                "action": a.action[:32],
                "arguments": a.arguments,
                "outcome": a.outcome[:300],
            }
            for a in actions
        ]
        async with self._db.session() as s:
            await s.execute(insert(AuditEntry), rows)

    async def latest(self, limit: int = 20) -> list[AuditRecord]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        async with self._db.reading() as s:
            rows = (await s.execute(query)).scalars().all()
        return [
            AuditRecord(r.id, r.created_at, r.admin_id, r.action, r.arguments, r.outcome) for r in rows
        ]
