"""Tool events: written in batches by the tools feature, summarized for /stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import case, func, insert, select

from bot.storage.db import Database
from bot.storage.models import ToolEvent
from bot.runtime.clock import utcnow


@dataclass(frozen=True)
class ToolEventRecord:
    """One executed (or refused) tool call."""

    tool: str
    status: str
    duration_ms: int
    user_id: int
    chat_id: int
    request_id: str | None = None
    detail: str | None = None
    # The model's arguments, for subscribers in the process (the evaluation
    # harness checks them); never written to the table: they are user data.
    arguments: str | None = None


@dataclass(frozen=True)
class ToolStats:
    tool: str
    calls: int
    failures: int  # any status but ok
    timeouts: int
    avg_ms: float
    max_ms: int


class ToolEventRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_many(self, events: Sequence[ToolEventRecord], at: datetime | None = None) -> None:
        if not events:
            return
        created = at or utcnow()
        rows = [{**asdict(event), "created_at": created} for event in events]
        for row in rows:
            del row["arguments"]
        async with self._db.session() as s:
            await s.execute(insert(ToolEvent), rows)

    async def summary(self, since: datetime) -> list[ToolStats]:
        """Per tool since ``since``: calls, failures, timeouts, durations; busiest first."""
        failed = func.sum(case((ToolEvent.status != "ok", 1), else_=0))
        timed_out = func.sum(case((ToolEvent.status == "timeout", 1), else_=0))
        query = (
            select(
                ToolEvent.tool,
                func.count(),
                failed,
                timed_out,
                func.avg(ToolEvent.duration_ms),
                func.max(ToolEvent.duration_ms),
            )
            .where(ToolEvent.created_at >= since)
            .group_by(ToolEvent.tool)
            .order_by(func.count().desc(), ToolEvent.tool)
        )
        async with self._db.session() as s:
            rows = (await s.execute(query)).all()
        return [
            ToolStats(str(tool), int(calls), int(fails or 0), int(timeouts or 0), float(avg or 0), int(peak or 0))
            for tool, calls, fails, timeouts, avg, peak in rows
        ]

    async def count(self) -> int:
        async with self._db.session() as s:
            return int((await s.execute(select(func.count()).select_from(ToolEvent))).scalar_one())
