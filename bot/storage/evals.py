"""SQL of evaluation runs and their task results (see EvalRun, EvalResult)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.runtime.clock import utcnow
from bot.storage.db import Database
from bot.storage.models import EvalResult, EvalRun


@dataclass(frozen=True)
class CheckOutcome:
    check: str  # contains: "hello", tool: create_reminder, rubric, ...
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class TaskOutcome:
    """One task under one variant, as measured."""

    task_id: str
    category: str
    variant: str
    passed: bool
    checks: tuple[CheckOutcome, ...]
    transcript: tuple[tuple[str, str], ...]  # (user, assistant) per turn
    total_ms: int
    first_token_ms: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    tools: tuple[str, ...] = ()
    model: str | None = None
    fallbacks: int = 0
    error: str | None = None
    # The agent that answered each turn of ``transcript`` (None: no agent
    # recorded for it); empty when the variant ran in single-agent mode.
    agents: tuple[str | None, ...] = ()

    @property
    def tool_calls(self) -> int:
        return len(self.tools)

    @property
    def agent(self) -> str | None:
        """The agent that answered the last turn (what ``expect.agent`` checks)."""
        return self.agents[-1] if self.agents else None

    def as_dict(self) -> dict[str, Any]:
        """The task result as ``eval export`` writes it."""
        return {
            "task_id": self.task_id,
            "category": self.category,
            "variant": self.variant,
            "passed": self.passed,
            "error": self.error,
            "first_token_ms": self.first_token_ms,
            "total_ms": self.total_ms,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": self.cost,
            "tool_calls": self.tool_calls,
            "tools": list(self.tools),
            "model": self.model,
            "fallbacks": self.fallbacks,
            "agent": self.agent,
            "checks": [{"check": c.check, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "transcript": [{"user": u, "assistant": a} for u, a in self.transcript],
        }


@dataclass(frozen=True)
class RunRecord:
    id: str
    suite: str
    name: str | None
    status: str
    variants: dict[str, str]
    tasks_total: int
    concurrency: int
    started_at: datetime
    finished_at: datetime | None = None
    results: list[TaskOutcome] = field(default_factory=list)


class EvalRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start_run(
        self, run_id: str, suite: str, name: str | None, variants: dict[str, str], tasks_total: int, concurrency: int
    ) -> None:
        async with self._db.session() as s:
            s.add(
                EvalRun(
                    id=run_id, suite=suite, name=name, status="running", variants=json.dumps(variants),
                    tasks_total=tasks_total, concurrency=concurrency, started_at=utcnow(),
                )
            )

    async def add_result(self, run_id: str, outcome: TaskOutcome) -> None:
        async with self._db.session() as s:
            s.add(_row(run_id, outcome))

    async def finish_run(self, run_id: str, status: str = "finished") -> None:
        async with self._db.session() as s:
            await s.execute(update(EvalRun).where(EvalRun.id == run_id).values(status=status, finished_at=utcnow()))

    async def run(self, run_id: str) -> RunRecord | None:
        """The run with every result, in the order they finished; None if unknown."""
        async with self._db.reading() as s:
            row = await s.get(EvalRun, run_id)
            if row is None:
                return None
            results = (
                await s.scalars(select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.id))
            ).all()
        return _record(row, [_outcome(r) for r in results])

    async def runs(self, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, without their results."""
        async with self._db.reading() as s:
            rows = (await s.scalars(select(EvalRun).order_by(EvalRun.started_at.desc()).limit(limit))).all()
        return [_record(row, []) for row in rows]


def _row(run_id: str, o: TaskOutcome) -> EvalResult:
    return EvalResult(
        run_id=run_id, variant=o.variant, task_id=o.task_id, category=o.category, passed=o.passed,
        checks=json.dumps([{"check": c.check, "passed": c.passed, "detail": c.detail} for c in o.checks],
                          ensure_ascii=False),
        transcript=_transcript_json(o),
        error=o.error[:500] if o.error else None, first_token_ms=o.first_token_ms, total_ms=o.total_ms,
        tokens_in=o.tokens_in, tokens_out=o.tokens_out, cost=o.cost, tool_calls=o.tool_calls,
        tools=json.dumps(list(o.tools)), model=o.model, fallbacks=o.fallbacks, finished_at=utcnow(),
    )


def _outcome(r: EvalResult) -> TaskOutcome:
    turns = json.loads(r.transcript)
    return TaskOutcome(
        task_id=r.task_id, category=r.category, variant=r.variant, passed=r.passed,
        checks=tuple(CheckOutcome(c["check"], c["passed"], c.get("detail", "")) for c in json.loads(r.checks)),
        transcript=tuple((turn[0], turn[1]) for turn in turns),
        agents=_agents_of(turns),
        total_ms=r.total_ms, first_token_ms=r.first_token_ms, tokens_in=r.tokens_in, tokens_out=r.tokens_out,
        cost=r.cost, tools=tuple(json.loads(r.tools)), model=r.model, fallbacks=r.fallbacks, error=r.error,
    )


def _transcript_json(o: TaskOutcome) -> str:
    """[[user, assistant], ...], with the answering agent as a third item of
    each turn in multi-agent mode. The agent rides in the transcript's JSON
    because it belongs to a turn, and this adds no column (no migration);
    rows written before it (two items) read back as single-agent."""
    if not o.agents:
        return json.dumps([[u, a] for u, a in o.transcript], ensure_ascii=False)
    agents = list(o.agents) + [None] * (len(o.transcript) - len(o.agents))
    return json.dumps([[u, a, agent] for (u, a), agent in zip(o.transcript, agents)], ensure_ascii=False)


def _agents_of(turns: list[list[Any]]) -> tuple[str | None, ...]:
    agents = tuple(turn[2] if len(turn) > 2 else None for turn in turns)
    return agents if any(agents) else ()


def _record(row: EvalRun, results: list[TaskOutcome]) -> RunRecord:
    return RunRecord(
        id=row.id, suite=row.suite, name=row.name, status=row.status, variants=json.loads(row.variants),
        tasks_total=row.tasks_total, concurrency=row.concurrency, started_at=row.started_at,
        finished_at=row.finished_at, results=results,
    )
