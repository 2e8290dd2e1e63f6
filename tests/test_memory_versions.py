"""Several processes over one database (the scaled mode): each MemoryService
caches FAISS indexes of users' memories, and users.memory_version tells it
when another process changed them. Here each "process" is a MemoryService
with its own Database engine, over one SQLite file (and PostgreSQL when
TEST_DATABASE_URL is set), with the real embedder and real FAISS.

Dense-only searches (keyword=False) look at the index alone: a stale index
shows there, where hybrid recall would hide it behind keyword hits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from bot.memory.embedder import Embedder, EmbeddingService
from bot.memory.index import read_index
from bot.memory.records import NewMemory
from bot.memory.repository import MemoryRepository
from bot.memory.service import MemoryConfig, MemoryService
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker
from bot.storage.db import Database
from bot.storage.identities import IdentityRepository
from bot.storage.repositories import UserProfile, UserRepository
from bot.storage.userdata import UserDataRepository

ANN, BOB = 101, 202
FACTS = [
    "My daughter Lisa is seven years old",
    "I work as a nurse at the city hospital",
    "I am allergic to peanuts",
]
VIOLIN = "I play the violin"
MUSIC = "which musical instrument do I practise"
MOTORBIKE = "I ride a red motorbike"
RIDE = "what vehicle do I ride"


@dataclass
class Worker:
    """One process's memory: its own engine, tasks and index folder."""

    db: Database
    memory: MemoryService
    errors: list[BaseException] = field(default_factory=list)

    async def stop(self) -> None:
        await self.memory.close()
        await self.db.dispose()
        assert self.errors == [], "background work failed"


@dataclass
class Cluster:
    url: str
    embedder: Embedder
    root: Path
    workers: list[Worker] = field(default_factory=list)

    async def start(self, folder: str, **config: object) -> Worker:
        db = Database(self.url)
        errors: list[BaseException] = []
        tasks = TaskTracker(on_error=lambda exc, _name: errors.append(exc))
        embedder = self.embedder
        memory = MemoryService(
            MemoryRepository(db), EmbeddingService(lambda: embedder, tasks), tasks,
            MemoryConfig(index_dir=self.root / folder, **config),  # type: ignore[arg-type]
        )
        memory.start()
        assert await memory.embeddings.wait_ready(30)
        worker = Worker(db, memory, errors)
        self.workers.append(worker)
        return worker

    async def stop(self, worker: Worker) -> None:
        self.workers.remove(worker)
        await worker.stop()


@pytest.fixture
async def cluster(database_url: str, embedder: Embedder, tmp_path: Path) -> AsyncIterator[Cluster]:
    db = Database(database_url)
    await db.migrate()
    users = UserRepository(db, "UTC")
    for uid, name in ((ANN, "Ann"), (BOB, "Bob")):
        await users.touch(UserProfile(uid, name), "user")
    await db.dispose()
    cluster = Cluster(database_url, embedder, tmp_path)
    yield cluster
    for worker in list(cluster.workers):
        await cluster.stop(worker)


async def remember(worker: Worker, user_id: int, *facts: str, **fields: object) -> list[int]:
    records = await worker.memory.add(user_id, [NewMemory(text=f, **fields) for f in facts])  # type: ignore[arg-type]
    return [r.id for r in records]


async def dense(worker: Worker, user_id: int, query: str, k: int = 1) -> list[str]:
    return [hit.memory.text for hit in await worker.memory.search(user_id, query, k, keyword=False)]


def indexed_ids(worker: Worker, user_id: int) -> set[int]:
    entry = worker.memory._cache.get(user_id)  # noqa: SLF001 - what the process holds
    assert entry is not None, "the user's index is cached"
    return entry.index.ids()


async def stored_ids(worker: Worker, user_id: int) -> set[int]:
    return {record.id for record in await worker.memory.repository.all(user_id)}


async def stored_version(cluster: Cluster, user_id: int) -> int | None:
    """Read by a process of its own, as a new worker would."""
    db = Database(cluster.url)
    try:
        return await MemoryRepository(db).version(user_id)
    finally:
        await db.dispose()


async def test_another_processes_add_update_and_delete_reach_a_cached_index(cluster: Cluster) -> None:
    a, b = await cluster.start("a"), await cluster.start("b")
    ids = await remember(a, ANN, *FACTS)
    assert await dense(b, ANN, "What is my job?") == [FACTS[1]]  # B caches Ann's index now
    rebuilds = b.memory.rebuilds

    [violin] = await remember(a, ANN, VIOLIN)
    assert await dense(b, ANN, MUSIC) == [VIOLIN]
    assert b.memory.rebuilds == rebuilds + 1

    await a.memory.update(ANN, ids[2], MOTORBIKE)  # B's copy still holds the vector of peanuts
    assert await dense(b, ANN, RIDE) == [MOTORBIKE]

    await a.memory.delete(ANN, [violin])
    assert VIOLIN not in await dense(b, ANN, MUSIC, 5)
    assert violin not in indexed_ids(b, ANN)
    assert indexed_ids(b, ANN) == await stored_ids(a, ANN)
    assert b.memory.rebuilds == rebuilds + 3, "one rebuild per change B had not seen"


async def test_hybrid_recall_checks_the_version_its_keyword_statement_read(cluster: Cluster) -> None:
    """Recall with keyword search on reads the version in the keyword
    statement, not on its own: the dense side must still see A's write."""
    a, b = await cluster.start("a"), await cluster.start("b")
    await remember(a, ANN, *FACTS)
    assert await dense(b, ANN, "What is my job?") == [FACTS[1]]

    await remember(a, ANN, VIOLIN)
    records, version = await b.memory.repository.keyword_records_and_version(ANN, "violin", 5)
    assert [r.text for r in records] == [VIOLIN] and version == await stored_version(cluster, ANN)
    [hit] = [h for h in await b.memory.search(ANN, "my violin", 3) if h.memory.text == VIOLIN]
    assert hit.keyword_rank == 1 and hit.similarity is not None, "found by B's index too, not by keyword alone"


async def test_a_processes_own_writes_reach_its_index_without_a_rebuild(cluster: Cluster) -> None:
    a = await cluster.start("a")
    ids = await remember(a, ANN, *FACTS)
    assert await dense(a, ANN, "What is my job?") == [FACTS[1]]  # the first load builds the index
    rebuilds, cached = a.memory.rebuilds, a.memory._cache.get(ANN)  # noqa: SLF001

    [violin] = await remember(a, ANN, VIOLIN)
    assert await dense(a, ANN, MUSIC) == [VIOLIN]
    await a.memory.update(ANN, ids[2], MOTORBIKE)
    assert await dense(a, ANN, RIDE) == [MOTORBIKE]
    await a.memory.delete(ANN, [violin])
    assert VIOLIN not in await dense(a, ANN, MUSIC, 5)

    assert a.memory.rebuilds == rebuilds
    entry = a.memory._cache.get(ANN)  # noqa: SLF001
    assert entry is cached, "the index was neither rebuilt nor loaded again from its file"
    assert entry is not None and entry.version == await a.memory.repository.version(ANN)


async def test_versions_and_saved_indexes_survive_restarts(cluster: Cluster) -> None:
    a = await cluster.start("a")
    await remember(a, ANN, *FACTS)
    assert await dense(a, ANN, "What is my job?") == [FACTS[1]]
    await cluster.stop(a)  # saves Ann's index at her version
    version = await stored_version(cluster, ANN)

    again = await cluster.start("a")
    assert await dense(again, ANN, "how old is my kid") == [FACTS[0]]
    assert again.memory.rebuilds == 0, "the file at the database's version is used as saved"
    assert await again.memory.repository.version(ANN) == version
    await cluster.stop(again)

    b = await cluster.start("b")
    await remember(b, ANN, VIOLIN)  # while A is down: A's file is a version behind now
    third = await cluster.start("a")
    assert await dense(third, ANN, MUSIC) == [VIOLIN]
    assert third.memory.rebuilds == 1


async def test_writes_of_two_processes_at_once_leave_both_indexes_right(cluster: Cluster) -> None:
    a, b = await cluster.start("a"), await cluster.start("b")
    await remember(a, ANN, *FACTS)
    for worker in (a, b):
        await dense(worker, ANN, "hobby")  # both cache Ann's index
    await asyncio.gather(
        *(remember(a, ANN, f"Fact {i} of worker A about hobby {i}") for i in range(6)),
        *(remember(b, ANN, f"Fact {i} of worker B about hobby {i}") for i in range(6)),
        *(dense(worker, ANN, f"hobby {i}") for i in range(6) for worker in (a, b)),
    )
    stored = await stored_ids(a, ANN)
    assert len(stored) == len(FACTS) + 12
    for worker in (a, b):
        await dense(worker, ANN, "hobby")  # a search brings a stale index up to date
        assert indexed_ids(worker, ANN) == stored


async def test_processes_may_share_one_index_folder(cluster: Cluster) -> None:
    a, b = await cluster.start("shared"), await cluster.start("shared")
    await remember(a, ANN, *FACTS)
    assert await dense(a, ANN, "What is my job?") == [FACTS[1]]  # A builds and saves the file
    assert await dense(b, ANN, "how old is my kid") == [FACTS[0]]
    assert b.memory.rebuilds == 0, "B used the file A saved at the current version"

    await remember(b, ANN, VIOLIN)
    assert await dense(a, ANN, MUSIC) == [VIOLIN]
    await cluster.stop(a)
    await cluster.stop(b)
    index, header = read_index(cluster.root / "shared" / f"{ANN}.faiss", cluster.embedder.name, cluster.embedder.dim)
    assert header.memory_version == await stored_version(cluster, ANN)
    assert index.size == len(FACTS) + 1


async def test_an_index_made_stale_by_an_erase_is_not_written_back(cluster: Cluster) -> None:
    """B holds Ann's index with changes not saved yet when A erases her
    memories (/deleteme): B's shutdown must not put their vectors back on disk."""
    a, b = await cluster.start("shared"), await cluster.start("shared")
    await remember(a, ANN, *FACTS)
    assert await dense(b, ANN, "What is my job?") == [FACTS[1]]
    entry = b.memory._cache.get(ANN)  # noqa: SLF001
    assert entry is not None
    entry.unsaved_changes = 1  # as after writes B had not saved yet

    assert await a.memory.delete_all(ANN) == len(FACTS)
    await cluster.stop(b)
    assert not (cluster.root / "shared" / f"{ANN}.faiss").exists()


async def test_linking_two_users_reaches_another_processes_index_of_the_survivor(cluster: Cluster) -> None:
    a, b = await cluster.start("a"), await cluster.start("b")
    await remember(a, ANN, *FACTS)
    await remember(a, BOB, "I fly gliders on weekends")
    assert await dense(b, ANN, "What is my job?") == [FACTS[1]]

    merged = await IdentityRepository(a.db).merge(BOB, ANN)  # /link on A: Bob's memories become Ann's
    assert merged.memories == 1
    assert await dense(b, ANN, "what do I do in the air on weekends") == ["I fly gliders on weekends"]
    assert await b.memory.repository.version(BOB) is None, "the absorbed user is gone"


async def test_every_write_to_a_users_memories_bumps_their_version_and_only_theirs(cluster: Cluster) -> None:
    a = await cluster.start("a", max_per_user=4)
    repository = a.memory.repository
    versions = [await repository.version(ANN)]
    bob = await repository.version(BOB)

    async def bumps() -> int:
        """By how much Ann's version moved since the last call."""
        versions.append(await repository.version(ANN))
        before, after = versions[-2], versions[-1]
        assert before is not None and after is not None
        return after - before

    ids = await remember(a, ANN, *FACTS)
    assert await bumps() == 1, "add"
    await a.memory.update(ANN, ids[0], "My daughter Lisa is eight years old")
    assert await bumps() == 1, "update"
    await a.memory.delete(ANN, [ids[2]])
    assert await bumps() == 1, "delete"
    assert await a.memory.delete(ANN, [ids[2]]) == [] and await bumps() == 0, "deleting nothing changes nothing"
    await remember(a, ANN, "I am in Rome this week", kind="ephemeral", expires_at=utcnow() - timedelta(seconds=1))
    assert await bumps() == 1
    assert await a.memory.sweep_expired() == 1 and await bumps() == 1, "expiry"
    await remember(a, ANN, "I like jazz", "I like tea", "I like chess")
    assert await a.memory.count(ANN) == 4 and await bumps() == 2, "add past the cap, then the eviction"
    await repository.set_embeddings(ANN, {ids[0]: b"\0" * 4 * cluster.embedder.dim}, "test:other-model")
    assert await bumps() == 1, "vectors of another model"
    assert await repository.version(BOB) == bob, "Ann's writes leave Bob's version alone"
    await remember(a, BOB, "I fly gliders on weekends")
    await IdentityRepository(a.db).merge(BOB, ANN)
    assert await bumps() == 1, "/link moved Bob's memory to Ann"
    assert await a.memory.delete_all(ANN) == 5 and await bumps() == 1, "erase"


async def test_a_user_erased_and_created_again_never_repeats_a_version(cluster: Cluster) -> None:
    """A process may still cache the erased user's index at their last
    version; the new user's numbers must never meet it."""
    a, b = await cluster.start("a"), await cluster.start("b")
    await remember(a, ANN, *FACTS)
    assert await dense(b, ANN, "What is my job?") == [FACTS[1]]
    old = await a.memory.repository.version(ANN)

    await a.memory.delete_all(ANN)
    assert await UserDataRepository(a.db).delete_profile(ANN) == 1
    await UserRepository(a.db, "UTC").touch(UserProfile(ANN, "Ann"), "user")
    new = await a.memory.repository.version(ANN)
    assert old is not None and new is not None and new > old
    [violin] = await remember(a, ANN, VIOLIN)
    assert await dense(b, ANN, MUSIC) == [VIOLIN]
    assert indexed_ids(b, ANN) == {violin}, "B rebuilt: the erased memories are gone"


def test_only_a_newer_version_makes_a_cached_index_stale() -> None:
    """A version read before this process's own write (which the index
    already mirrors) is older than the index: no rebuild for that."""
    from bot.memory.service import _behind

    assert not _behind(7, 7) and not _behind(7, 6) and not _behind(None, None)
    assert _behind(7, 8), "another process wrote"
    assert _behind(7, None), "the user is gone"
    assert _behind(None, 8), "the user was created since"
