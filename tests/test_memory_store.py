"""Long-term memory storage and recall with the real embedder, real FAISS and
a real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.memory import keyword
from bot.errors import IndexFileError
from bot.memory.embedder import Embedder, EmbeddingService
from bot.memory.index import SketchIndex, VectorIndex, load_index
from bot.memory.records import NewMemory
from bot.memory.repository import MemoryRepository
from bot.memory.service import MemoryConfig, MemoryService
from bot.storage.db import Database
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker
from tests.support.memory_service import ANN, BOB, build_service
from tests.support.memory_service import fixture_db  # noqa: F401  (the db fixture)


@pytest.fixture
async def memory(db: Database, embedder: Embedder, tmp_path: Path) -> AsyncIterator[MemoryService]:
    service = await build_service(db, embedder, tmp_path / "memory")
    yield service
    await service.close()


def texts(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [hit.memory.text for hit in hits]


async def remember(memory: MemoryService, user_id: int, *facts: str, **fields: object) -> list[int]:
    records = await memory.add(user_id, [NewMemory(text=f, **fields) for f in facts])  # type: ignore[arg-type]
    return [r.id for r in records]


FACTS = [
    "My daughter Lisa is seven years old",
    "I work as a nurse at the city hospital",
    "I am allergic to peanuts",
    "My car is a blue Toyota Corolla",
    "I prefer short answers without emojis",
]


async def test_paraphrased_question_recalls_the_fact(memory: MemoryService) -> None:
    await remember(memory, ANN, *FACTS)
    assert texts(await memory.search(ANN, "What is my job?", 1)) == ["I work as a nurse at the city hospital"]
    assert texts(await memory.search(ANN, "how old is my kid", 1)) == ["My daughter Lisa is seven years old"]
    # Dense search alone finds it (no shared content word): this is the embedder at work.
    dense_only = await memory.search(ANN, "which vehicle do I drive", 1, keyword=False)
    assert texts(dense_only) == ["My car is a blue Toyota Corolla"]


async def test_unrelated_small_talk_recalls_nothing(memory: MemoryService) -> None:
    await remember(memory, ANN, *FACTS)
    assert await memory.search(ANN, "thanks, that's all!", 5) == []
    assert await memory.search(ANN, "   ", 5) == []


async def test_russian_fact_is_recalled_by_a_russian_query(memory: MemoryService) -> None:
    await remember(
        memory,
        ANN,
        *FACTS,
        "Моя сестра Катя живёт в Казани",
        "Я работаю учителем в школе",
        "Моего кота зовут Барсик",
        "Я не ем мясо",
    )
    hits = await memory.search(ANN, "Где живет сестра?", 5)
    assert texts(hits)[0] == "Моя сестра Катя живёт в Казани"
    assert hits[0].keyword_rank == 1, "keyword search (inflected, ё/е folded) found it"
    assert texts(await memory.search(ANN, "как зовут моего кота", 1)) == ["Моего кота зовут Барсик"]
    assert texts(await memory.search(ANN, "Кем я работаю?", 1)) == ["Я работаю учителем в школе"]


async def test_user_b_never_recalls_user_a(memory: MemoryService) -> None:
    await remember(memory, ANN, "My secret bank PIN hint is the blue elephant")
    await remember(memory, BOB, "I like football")
    for query in ("bank PIN hint", "blue elephant", "secret"):
        assert await memory.search(BOB, query, 5) == []
        assert texts(await memory.search(ANN, query, 5)) == ["My secret bank PIN hint is the blue elephant"]
    [ann_id] = [r.id for r in (await memory.page(ANN, 0, 10))[0]]
    assert await memory.delete(BOB, [ann_id]) == []
    assert await memory.update(BOB, ann_id, "hijacked") is None
    assert texts(await memory.search(ANN, "bank PIN hint", 1)) == ["My secret bank PIN hint is the blue elephant"]


async def test_update_replaces_text_and_vector(memory: MemoryService) -> None:
    [city] = await remember(memory, ANN, "I live in Berlin")
    await memory.update(ANN, city, "I live in Paris")
    assert texts(await memory.search(ANN, "Which city do I live in?", 5)) == ["I live in Paris"]
    assert await memory.search(ANN, "Berlin", 5, dense=False) == [], "the old text left the keyword index"
    assert await memory.count(ANN) == 1


async def test_forget_deletes_from_index_and_keyword_search(memory: MemoryService) -> None:
    ids = await remember(memory, ANN, *FACTS)
    await memory.delete(ANN, [ids[2]])
    assert "I am allergic to peanuts" not in texts(await memory.search(ANN, "peanut allergy", 5))
    assert await memory.delete_all(ANN) == 4
    assert await memory.search(ANN, "What is my job?", 5) == []
    assert await memory.count(ANN) == 0


async def test_cap_forgets_least_important_then_least_recently_used(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    memory = await build_service(db, embedder, tmp_path / "m", max_per_user=3)
    try:
        trivia = await remember(memory, ANN, "I had pasta for lunch", importance=1)
        old, recent = await remember(memory, ANN, "I like tea", "I like jazz", importance=3)
        await memory.repository.touch(ANN, [recent])
        await remember(memory, ANN, "My name is Ann", importance=5)
        assert await memory.count(ANN) == 3
        assert trivia[0] not in {r.id for r in (await memory.page(ANN, 0, 10))[0]}
        await remember(memory, ANN, "My son is Tom", importance=4)
        kept = {r.text for r in (await memory.page(ANN, 0, 10))[0]}
        assert kept == {"I like jazz", "My name is Ann", "My son is Tom"}, "the unused 'tea' goes before 'jazz'"
        assert old not in {hit.memory.id for hit in await memory.search(ANN, "tea", 5)}
    finally:
        await memory.close()


async def test_ephemeral_memories_expire(memory: MemoryService) -> None:
    [trip] = await remember(memory, ANN, "I am in Rome this week", kind="ephemeral",
                            expires_at=utcnow() + timedelta(days=7))
    assert texts(await memory.search(ANN, "Rome trip", 5)) == ["I am in Rome this week"]
    await memory.repository.update(ANN, trip, text_="I am in Rome this week", embedding=None, model=None,
                                   expires_at=utcnow() - timedelta(seconds=1))
    assert await memory.search(ANN, "Rome trip", 5) == [], "expired memories are never recalled"
    assert await memory.sweep_expired() == 1
    assert await memory.count(ANN) == 0


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "truncated", "stale"])
async def test_broken_index_file_is_rebuilt_with_the_same_results(
    db: Database, embedder: Embedder, tmp_path: Path, damage: str
) -> None:
    index_dir = tmp_path / "memory"
    queries = ["What is my job?", "how old is my kid", "car", "peanut"]
    first = await build_service(db, embedder, index_dir)
    ids = await remember(first, ANN, *FACTS)
    before = {q: texts(await first.search(ANN, q, 3)) for q in queries}
    await first.close()
    path = index_dir / f"{ANN}.faiss"
    assert path.exists(), "a small index is saved at once"

    if damage == "deleted":
        path.unlink()
    elif damage == "corrupted":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # the database moved on while this file was not saved (another worker, a crash)
        other = await build_service(db, embedder, tmp_path / "elsewhere")
        await other.delete(ANN, [ids[3]])
        await other.update(ANN, ids[1], "I work as a firefighter")
        await remember(other, ANN, "I play the violin")
        await other.close()
        fresh = await build_service(db, embedder, tmp_path / "fresh")
        before = {q: texts(await fresh.search(ANN, q, 3)) for q in queries}
        await fresh.close()

    second = await build_service(db, embedder, index_dir)
    try:
        after = {q: texts(await second.search(ANN, q, 3)) for q in queries}
        assert after == before
    finally:
        await second.close()
    if damage == "stale":
        assert "I work as a firefighter" in after["What is my job?"]


async def test_a_very_large_users_index_is_sketched_and_kept_right_across_writes_and_restarts(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    index_dir = tmp_path / "memory"
    path = index_dir / f"{ANN}.faiss"
    # A file saved exact (under a higher threshold) is the wrong kind for a
    # lower one: it is converted on load, not trusted.
    first = await build_service(db, embedder, index_dir)
    ids = await remember(first, ANN, *FACTS, "I live in Berlin", "My sister Anna lives in Oslo")
    await first.search(ANN, "anything", 1)  # loads the index, which saves it
    await first.close()
    assert load_index(path, embedder.name, embedder.dim)[0].kind == "exact"

    memory = await build_service(db, embedder, index_dir, exact_search_max=6)
    try:
        assert texts(await memory.search(ANN, "What is my job?", 1)) == ["I work as a nurse at the city hospital"]
        entry = memory._cache.get(ANN)  # noqa: SLF001
        assert entry is not None and isinstance(entry.index, SketchIndex)
        await memory.update(ANN, ids[5], "I live in Paris")
        found = texts(await memory.search(ANN, "Which city do I live in?", 3))
        assert "I live in Paris" in found and "I live in Berlin" not in found
        await memory.delete(ANN, [ids[1]])
        assert "I work as a nurse at the city hospital" not in texts(await memory.search(ANN, "What is my job?", 5))
        assert entry.index.ids() == set(ids) - {ids[1]}
    finally:
        await memory.close()
    assert load_index(path, embedder.name, embedder.dim)[0].kind == "sketch", "saved as converted"

    again = await build_service(db, embedder, index_dir, exact_search_max=6)
    try:
        assert "I live in Paris" in texts(await again.search(ANN, "Which city do I live in?", 3))
        assert isinstance(again._cache.get(ANN).index, SketchIndex)  # type: ignore[union-attr]  # noqa: SLF001
    finally:
        await again.close()

    # Threshold raised well above the size: back to exact on load.
    exact = await build_service(db, embedder, index_dir, exact_search_max=100)
    try:
        assert "I live in Paris" in texts(await exact.search(ANN, "Which city do I live in?", 3))
        assert type(exact._cache.get(ANN).index) is VectorIndex  # type: ignore[union-attr]  # noqa: SLF001
    finally:
        await exact.close()


async def test_an_index_growing_past_the_threshold_is_converted_and_saved(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    memory = await build_service(db, embedder, tmp_path / "m", exact_search_max=4)
    try:
        await remember(memory, ANN, *FACTS[:4])
        await memory.search(ANN, "anything", 1)  # loads the index: writes now reach it
        assert memory._cache.get(ANN).index.kind == "exact"  # type: ignore[union-attr]  # noqa: SLF001
        await remember(memory, ANN, FACTS[4])
        assert memory._cache.get(ANN).index.kind == "sketch"  # type: ignore[union-attr]  # noqa: SLF001
        assert texts(await memory.search(ANN, "peanut allergy", 1)) == ["I am allergic to peanuts"]
    finally:
        await memory.close()


async def test_common_words_do_not_drown_a_rare_one(
    memory: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyword, "COMMON_TERM_ROWS", 3)
    await remember(memory, ANN, *(f"Я пью кофе по утрам, вариант {i}" for i in range(5)))
    [sister] = await remember(memory, ANN, "Моя сестра Катя живёт в Казани")
    # "кофе" matches five rows (common at a bound of 3), "сестре" (inflected) one.
    found = await memory.repository.keyword_search(ANN, "Что сестре нравится, кофе?", 10)
    assert found == [sister], "the common word is dropped once the rare prefix matched"
    only_common = await memory.repository.keyword_search(ANN, "кофе", 10)
    assert len(only_common) == 4 and only_common == sorted(only_common, reverse=True), (
        "a common word alone ranks its newest matches (the bound plus one)"
    )
    assert await memory.repository.keyword_search(BOB, "кофе сестра", 10) == []


async def test_memories_stored_before_the_model_loaded_are_indexed_later(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    tasks = TaskTracker()
    cold = MemoryService(MemoryRepository(db), EmbeddingService(lambda: embedder, tasks), tasks,
                         MemoryConfig(index_dir=tmp_path / "m"))
    # Not started: the embedder is not ready, yet writing and keyword recall work.
    await cold.add(ANN, [NewMemory("I work as a nurse at the city hospital")])
    assert texts(await cold.search(ANN, "nurse", 3)) == ["I work as a nurse at the city hospital"]
    assert await cold.search(ANN, "What is my job?", 3) == []
    cold.start()
    assert await cold.embeddings.wait_ready(30)
    assert texts(await cold.search(ANN, "What is my job?", 3)) == ["I work as a nurse at the city hospital"]
    await cold.close()


class LetterCounts(Embedder):
    """Another model, as after a change of EMBEDDING_MODEL: 26 dimensions of letter counts."""

    name = "test:letter-counts"
    dim = 26

    def encode(self, texts):  # type: ignore[no-untyped-def]
        import numpy as np

        rows = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for letter in text.lower():
                if "a" <= letter <= "z":
                    rows[row, ord(letter) - 97] += 1
            rows[row] /= max(float(np.linalg.norm(rows[row])), 1e-9)
        return rows


async def test_a_new_embedding_model_re_embeds_everyone_in_the_background_never_mixing(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    """Memories embedded by one model; the bot restarts with another. Without
    any recall, a background task gives every user's rows the new model's
    vectors and their indexes hold those alone."""
    from tests.conftest import eventually

    before = await build_service(db, embedder, tmp_path / "m")
    await remember(before, ANN, "Works as a nurse at the city hospital", "Allergic to peanuts")
    await remember(before, BOB, "Flies gliders on weekends")
    await before.close()

    after = await build_service(db, LetterCounts(), tmp_path / "m")
    try:
        repository = after.repository

        async def saved_sizes() -> list[int]:
            sizes = []
            for user_id in (ANN, BOB):
                try:
                    index, _ = load_index(tmp_path / "m" / f"{user_id}.faiss", LetterCounts.name, LetterCounts.dim)
                except IndexFileError:  # not saved with this model yet
                    return []
                sizes.append(index.size)
            return sizes

        await eventually(saved_sizes, lambda sizes: sizes == [2, 1])
        for user_id, count in ((ANN, 2), (BOB, 1)):
            embedded, waiting = await repository.indexed_state(user_id, LetterCounts.name)
            assert len(embedded) == count and waiting == []
        assert await repository.users_with_other_vectors(LetterCounts.name) == []
        assert texts(await after.search(ANN, "peanuts", 1, keyword=False)) == ["Allergic to peanuts"]
    finally:
        await after.close()


async def test_index_cache_is_bounded_and_evicted_indexes_come_back_from_their_files(
    db: Database, embedder: Embedder, tmp_path: Path
) -> None:
    memory = await build_service(db, embedder, tmp_path / "m", cache_vectors=5)
    try:
        await remember(memory, ANN, *FACTS)
        await remember(memory, BOB, "I like football", "My team is Arsenal")
        assert texts(await memory.search(ANN, "What is my job?", 1)) == ["I work as a nurse at the city hospital"]
        assert texts(await memory.search(BOB, "which club do I support", 1)) == ["My team is Arsenal"]
        assert memory._cache.total_vectors <= 5 and ANN not in memory._cache  # noqa: SLF001
        await remember(memory, ANN, "I play the violin")  # written while Ann's index is out of the cache
        assert texts(await memory.search(ANN, "What is my job?", 1)) == ["I work as a nurse at the city hospital"]
        assert texts(await memory.search(ANN, "musical instrument", 1)) == ["I play the violin"]
        assert BOB not in memory._cache  # noqa: SLF001
    finally:
        await memory.close()


async def test_concurrent_writes_and_searches_of_one_user_stay_consistent(memory: MemoryService) -> None:
    import asyncio

    facts = [f"Fact number {i} about hobby {i}" for i in range(30)]
    await asyncio.gather(
        *(remember(memory, ANN, fact) for fact in facts),
        *(memory.search(ANN, f"hobby {i}", 3) for i in range(30)),
    )
    assert await memory.count(ANN) == 30
    ids = {r.id for r in (await memory.page(ANN, 0, 100))[0]}
    entry = memory._cache.get(ANN)  # noqa: SLF001
    assert entry is not None and entry.index.ids() == ids


async def test_memory_migration_downgrades_and_upgrades_cleanly(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from bot.storage.db import alembic_config

    database = Database(database_url)
    try:
        await database.migrate()
        async with database.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0001"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "memories" not in tables and not any(t.startswith("memories_fts") for t in tables)
        await database.migrate()
        assert await database.pending_migrations() == []
    finally:
        await database.dispose()


async def test_the_schema_matches_the_models_so_autogenerate_stays_quiet(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bot.storage.models import Base, include_in_autogenerate

    database = Database(database_url)
    try:
        await database.migrate()
        async with database.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"include_name": include_in_autogenerate}),
                    Base.metadata,
                )
            )
        assert diff == []
    finally:
        await database.dispose()
