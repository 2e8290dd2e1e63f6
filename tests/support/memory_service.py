"""A MemoryService over a real, migrated database (SQLite, and PostgreSQL
when TEST_DATABASE_URL is set), for tests that call the service or its
tools directly, without a bot around them. The ``db`` fixture's database
already knows two users, Ann and Bob: memories belong to a user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.memory.embedder import Embedder, EmbeddingService
from bot.memory.repository import MemoryRepository
from bot.memory.service import MemoryConfig, MemoryService
from bot.runtime.tasks import TaskTracker
from bot.storage.db import Database
from bot.storage.repositories import UserProfile, UserRepository

ANN, BOB = 101, 202


async def build_service(db: Database, embedder: Embedder, index_dir: Path, **config: object) -> MemoryService:
    tasks = TaskTracker()
    embeddings = EmbeddingService(lambda: embedder, tasks)
    service = MemoryService(MemoryRepository(db), embeddings, tasks, MemoryConfig(index_dir=index_dir, **config))  # type: ignore[arg-type]
    service.start()
    assert await embeddings.wait_ready(30)
    return service


@pytest.fixture(name="db")
async def fixture_db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    users = UserRepository(database, "UTC")
    for uid, name in ((ANN, "Ann"), (BOB, "Bob")):
        await users.touch(UserProfile(uid, name), "user")
    yield database
    await database.dispose()
