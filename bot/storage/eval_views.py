"""Read-only SQL for the evaluation results page: pass counts of many runs
in one query, and the results a running run added since the page last
looked (the run is written by another process, `python -m bot eval run`;
the database is the only place its progress can be seen)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, case, func, select

from bot.storage.db import Database
from bot.storage.models import EvalResult, EvalRun


@dataclass(frozen=True)
class PassCount:
    passed: int
    done: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.done if self.done else None


@dataclass(frozen=True)
class LiveResult:
    """One result as the live view of a running run shows it."""

    row_id: int
    task_id: str
    category: str
    variant: str
    passed: bool
    total_ms: int
    error: str | None


@dataclass(frozen=True)
class RunProgress:
    status: str
    tasks_total: int
    new_results: list[LiveResult]
    counts: dict[str, PassCount]  # by variant, over every result so far


class EvalPageQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def pass_counts(self, run_ids: list[str]) -> dict[str, dict[str, PassCount]]:
        """run id -> variant -> how many of its results passed."""
        if not run_ids:
            return {}
        async with self._db.reading() as s:
            rows = await s.execute(_counts_query().where(EvalResult.run_id.in_(run_ids)))
            counts: dict[str, dict[str, PassCount]] = {}
            for run_id, variant, passed, done in rows:
                counts.setdefault(run_id, {})[variant] = PassCount(int(passed or 0), int(done))
        return counts

    async def progress(self, run_id: str, after_row: int) -> RunProgress | None:
        """The run's status, its results stored after row ``after_row``, and
        its counts so far; None if there is no such run."""
        async with self._db.reading() as s:
            run = await s.get(EvalRun, run_id)
            if run is None:
                return None
            new = await s.execute(
                select(
                    EvalResult.id, EvalResult.task_id, EvalResult.category, EvalResult.variant,
                    EvalResult.passed, EvalResult.total_ms, EvalResult.error,
                )
                .where(EvalResult.run_id == run_id, EvalResult.id > after_row)
                .order_by(EvalResult.id)
            )
            results = [LiveResult(*row) for row in new]
            counted = await s.execute(_counts_query().where(EvalResult.run_id == run_id))
            counts = {variant: PassCount(int(passed or 0), int(done)) for _, variant, passed, done in counted}
            return RunProgress(run.status, run.tasks_total, results, counts)

    async def last_row(self, run_id: str) -> int:
        """The newest result row of the run (0 without any): where a page's
        live updates start."""
        async with self._db.reading() as s:
            newest = await s.scalar(select(func.max(EvalResult.id)).where(EvalResult.run_id == run_id))
        return int(newest or 0)


def _counts_query() -> Select[tuple[str, str, int, int]]:
    """(run id, variant, passed, done) per run and variant; callers add the where."""
    passed = func.sum(case((EvalResult.passed.is_(True), 1), else_=0))
    return select(EvalResult.run_id, EvalResult.variant, passed, func.count()).group_by(
        EvalResult.run_id, EvalResult.variant
    )
