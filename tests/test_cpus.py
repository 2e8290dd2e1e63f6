"""CPU plan: the embedding thread and SQLite's worker threads on different
CPUs, everything else left where the kernel puts it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from bot.runtime.cpus import CpuPlan, allowed_cpus, pin_current_thread
from bot.memory.embedder import Embedder, EmbeddingService
from bot.settings import Settings
from bot.storage.db import Database
from bot.runtime.tasks import TaskTracker

ALLOWED = allowed_cpus()
needs_two_cpus = pytest.mark.skipif(
    ALLOWED is None or len(ALLOWED) < 2, reason="pinning needs Linux and at least two CPUs"
)


def test_the_embedder_gets_the_highest_cpu_and_storage_the_rest() -> None:
    plan = CpuPlan.for_process(True, frozenset({0, 1}))
    assert (plan.embedder, plan.storage) == ({1}, {0})
    plan = CpuPlan.for_process(True, frozenset({2, 3, 6, 7}))
    assert (plan.embedder, plan.storage) == ({7}, {2, 3, 6})
    assert plan.active
    assert plan.describe() == "embedder on CPU 7, SQLite on CPU 2,3,6"


@pytest.mark.parametrize("enabled, allowed", [(True, frozenset({0})), (False, frozenset({0, 1, 2, 3}))])
def test_one_cpu_or_switched_off_means_no_pinning(enabled: bool, allowed: frozenset[int]) -> None:
    plan = CpuPlan.for_process(enabled, allowed)
    assert (plan.embedder, plan.storage, plan.active) == (None, None, False)
    assert plan.describe() == "threads not pinned"


def test_the_setting_switches_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).bot_pin_threads is True  # type: ignore[call-arg]
    monkeypatch.setenv("BOT_PIN_THREADS", "false")
    assert Settings(_env_file=None).bot_pin_threads is False  # type: ignore[call-arg]


def affinity_of_new_thread(cpus: frozenset[int] | None) -> set[int]:
    seen: set[int] = set()

    def run() -> None:
        pin_current_thread(cpus)
        seen.update(os.sched_getaffinity(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen


@needs_two_cpus
def test_pinning_moves_only_the_calling_thread() -> None:
    assert ALLOWED is not None
    before = os.sched_getaffinity(0)
    assert affinity_of_new_thread(frozenset({min(ALLOWED)})) == {min(ALLOWED)}
    assert os.sched_getaffinity(0) == before


@needs_two_cpus
def test_a_refused_pin_is_logged_and_the_thread_runs_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    assert ALLOWED is not None
    with caplog.at_level(logging.WARNING, logger="bot.runtime.cpus"):
        assert affinity_of_new_thread(frozenset({max(ALLOWED) + 4096})) == set(ALLOWED)
    assert "runs anywhere" in caplog.text


class AffinityEmbedder(Embedder):
    """Records the CPUs of the thread it is called on."""

    name = "affinity"
    dim = 4

    def __init__(self) -> None:
        self.cpus: set[int] = set()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.cpus = set(os.sched_getaffinity(0))
        return np.eye(len(texts), self.dim, dtype=np.float32)


@needs_two_cpus
async def test_the_embedding_thread_runs_on_its_cpu_and_the_loop_stays_free() -> None:
    plan = CpuPlan.for_process(True)
    embedder = AffinityEmbedder()
    service = EmbeddingService(lambda: embedder, TaskTracker(), cpus=plan.embedder)
    service.start()
    assert await service.wait_ready(10)
    await service.encode(["hello"])
    await service.close()
    assert embedder.cpus == plan.embedder
    assert os.sched_getaffinity(0) == ALLOWED


@needs_two_cpus
async def test_sqlite_worker_threads_run_on_the_storage_cpus(tmp_path: Path) -> None:
    plan = CpuPlan.for_process(True)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'pinned.db'}", worker_cpus=plan.storage)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            worker_cpus = await raw._execute(os.sched_getaffinity, 0)  # noqa: SLF001 - ask the worker thread itself
        assert worker_cpus == plan.storage
        assert os.sched_getaffinity(0) == ALLOWED
    finally:
        await db.dispose()


@needs_two_cpus
async def test_without_a_plan_sqlite_threads_run_anywhere(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'free.db'}")
    try:
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert await raw._execute(os.sched_getaffinity, 0) == ALLOWED  # noqa: SLF001
    finally:
        await db.dispose()


async def test_a_plan_works_with_every_database(database_url: str) -> None:
    # SQLite pins its worker threads; PostgreSQL has none to pin (asyncpg
    # talks to the server from the loop) and must not be handed the option.
    db = Database(database_url, worker_cpus=CpuPlan.for_process(True, frozenset({0, 1})).storage)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await db.dispose()
