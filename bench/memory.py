"""P4: memory recall latency, embedding throughput and cold index load.
Prints one markdown table. (Retrieval quality: bench/recall_quality.py.)

    .venv/bin/python -m bench.memory            # everything (about two minutes)
    .venv/bin/python -m bench.memory --quick    # 1k and 10k only
    .venv/bin/python -m bench.memory --no-pinning   # threads where the kernel puts them

Latency is measured through MemoryService.search, the call a chat turn makes
(dense FAISS search + keyword search + rank fusion + fetching the rows),
against SQLite in a temp dir, one user per size. Seeded memories get random
unit vectors and pseudo-word texts: the FAISS work is the same as for real
vectors, and embedding 100k real texts would take this machine minutes.
Queries are real sentences, embedded by the real model in the "with
embedding" rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bench.harness import Row, ms, percentile, verdict  # noqa: E402
from bench.recall_set import DISTRACTORS  # noqa: E402
from bot.runtime.cpus import CpuPlan  # noqa: E402
from bot.memory.embedder import EmbeddingService, SentenceTransformerEmbedder  # noqa: E402
from bot.memory.index import VectorIndex, load_index  # noqa: E402
from bot.memory.keyword import index_terms  # noqa: E402
from bot.memory.repository import MemoryRepository  # noqa: E402
from bot.memory.service import MemoryConfig, MemoryService  # noqa: E402
from bot.storage.db import Database  # noqa: E402
from bot.runtime.clock import utcnow  # noqa: E402
from bot.storage.models import Memory  # noqa: E402
from bot.storage.repositories import UserProfile, UserRepository  # noqa: E402
from bot.runtime.tasks import TaskTracker  # noqa: E402

P99_BUDGET = 0.015
SEED = 20261121
QUERIES = [
    "What is my daughter's name?",
    "where do I work these days",
    "Which foods am I allergic to?",
    "When is my dentist appointment?",
    "what car do I drive",
    "Where does my sister live?",
    "What music do I like?",
    "Кем я работаю?",
    "Где живёт моя сестра?",
    "How should you answer me, short or long?",
]
SYLLABLES = "ka lo mi ne ru sa te vi do pa ri ko mu na se to li be ga fo".split()


def pseudo_words(count: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def unit_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


async def seed_user(db: Database, user_id: int, count: int, model: str, dim: int) -> list[str]:
    """Bulk-insert ``count`` memories straight through the ORM table (the FTS
    triggers fire as for any insert); returns their vocabulary."""
    rng = random.Random(SEED + user_id)
    vocabulary = pseudo_words(5000, rng)
    vectors = unit_vectors(count, dim, np.random.default_rng(SEED + user_id))
    # Old memories, as a real user's mostly are (an index load re-reads rows
    # changed in the minute before its file was saved).
    now = utcnow() - timedelta(days=30)
    chunk = 5000
    for start in range(0, count, chunk):
        texts = [" ".join(rng.choices(vocabulary, k=8)) for _ in range(start, min(count, start + chunk))]
        rows = [
            {
                "user_id": user_id,
                "text": text,
                "search_terms": index_terms(text),
                "kind": "fact",
                "importance": 3,
                "source": "extracted",
                "created_at": now,
                "updated_at": now,
                "embedding": vectors[i].tobytes(),
                "embedding_model": model,
            }
            for i, text in zip(range(start, min(count, start + chunk)), texts, strict=True)
        ]
        async with db.session() as s:
            await s.execute(insert(Memory), rows)
    return vocabulary


async def timed(call: Callable[[], Awaitable[object]], runs: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        await call()
    spans = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        spans.append(time.perf_counter() - start)
    return spans


def p50_p99(spans: list[float]) -> str:
    return f"{ms(percentile(spans, 50))} / {ms(percentile(spans, 99))}"


async def latency_rows(
    service: MemoryService, user_id: int, size: int, runs: int, vocabulary: list[str]
) -> list[Row]:
    await service.search(user_id, "warm up the index", service.policy.k)  # loads the index (cold load is measured apart)
    # Real questions plus two words the user's memories use, so the keyword
    # side has matches to rank, as it would for a real user.
    rng = random.Random(SEED)
    queries = [f"{q} {' '.join(rng.sample(vocabulary, 2))}" for q in QUERIES * 5]
    vectors = await service.embeddings.encode(queries)
    turn = iter(range(10**9))

    async def with_embedding() -> object:
        return await service.search(user_id, queries[next(turn) % len(queries)], service.policy.k)

    async def without_embedding() -> object:
        i = next(turn) % len(queries)
        return await service.search(user_id, queries[i], service.policy.k, vector=vectors[i])

    async def faiss_only() -> object:
        cached = service._cache.get(user_id)  # noqa: SLF001 - the index alone, without the version check
        assert cached is not None
        return await service._search_entry(user_id, cached, vectors[next(turn) % len(queries)], 20)  # noqa: SLF001

    async def keyword_only() -> object:
        return await service.repository.keyword_search(
            user_id, queries[next(turn) % len(queries)], service.policy.k * service.policy.candidates_per_hit
        )

    async def version_only() -> object:
        return await service.repository.version(user_id)

    full = await timed(with_embedding, runs)
    bare = await timed(without_embedding, runs)
    index = await timed(faiss_only, runs)
    words = await timed(keyword_only, runs)
    version = await timed(version_only, runs)
    label = f"{size // 1000}k memories"
    entry = service._cache.get(user_id)  # noqa: SLF001 - the index the searches above used
    kind = entry.index.kind if entry is not None else "none"
    rows = [
        Row("P4", "memory", f"recall {label}, with query embedding (p50 / p99)", p50_p99(full),
            "p99 <= 15 ms" if size >= 100_000 else "-",
            verdict(percentile(full, 99) <= P99_BUDGET) if size >= 100_000 else "info"),
        Row("P4", "memory", f"recall {label}, embedding given (p50 / p99)", p50_p99(bare)),
        Row("P4", "memory", f"FAISS search alone {label}, {kind} index (p50 / p99)", p50_p99(index)),
        Row("P4", "memory", f"keyword search alone {label} (p50 / p99)", p50_p99(words)),
        # A recall reads it on its own only without content words (the keyword statement brings it otherwise).
        Row("P4", "memory", f"memory version read alone {label} (p50 / p99)", p50_p99(version)),
    ]
    if entry is not None and entry.index.kind != "exact":
        rows += approximate_recall_rows(entry.index, vectors, label)
    return rows


def approximate_recall_rows(index: VectorIndex, queries: np.ndarray, label: str) -> list[Row]:
    """How much of the exact top 5 the approximate index finds: for the bench
    queries (real questions against random stored vectors: every neighbour is
    noise-level, the hardest case), and for queries near a stored vector
    (cosine ~0.6 to it, like a question about one memory)."""
    ids, stored = index.contents()
    exact = VectorIndex(index.dim)
    exact.upsert(ids, stored)
    rng = np.random.default_rng(SEED)
    near = stored[rng.choice(len(stored), len(queries), replace=False)]
    near = near + unit_vectors(len(queries), index.dim, rng) * 1.3
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    rows = []
    for name, batch in (("bench queries", queries), ("queries near a memory", near)):
        found = [
            len({i for i, _ in index.search(q, 5)} & {i for i, _ in exact.search(q, 5)}) / 5 for q in batch
        ]
        rows.append(Row("P4", "memory", f"{index.kind} index vs exact top 5, {label}, {name}", f"{np.mean(found):.3f}"))
    return rows


async def embedding_rows(service: MemoryService, runs: int) -> list[Row]:
    texts = [f"{fact} (note {i})" for i, fact in enumerate(DISTRACTORS * 2)][:256]
    start = time.perf_counter()
    await service.embeddings.encode(texts)
    batch = time.perf_counter() - start
    single = await timed(lambda: service.embeddings.encode_one("What is my daughter's name?"), runs)
    return [
        Row("P4", "memory", "embedding throughput, batches of 64", f"{len(texts) / batch:.0f} texts/s"),
        Row("P4", "memory", "one query embedding (p50 / p99)", p50_p99(single)),
    ]


async def cold_load_rows(
    db: Database, service: MemoryService, user_id: int, index_dir: Path, size: int, cpus: CpuPlan
) -> list[Row]:
    await service.close()  # saves every cached index
    path = index_dir / f"{user_id}.faiss"
    start = time.perf_counter()
    await asyncio.to_thread(load_index, path, service.embeddings.name, service.embeddings.dim)
    file_only = time.perf_counter() - start

    tasks = TaskTracker()
    embeddings = EmbeddingService(lambda: service.embeddings._require(), tasks, cpus=cpus.embedder)  # noqa: SLF001 - reuse the loaded model
    fresh = MemoryService(MemoryRepository(db), embeddings, tasks, service.config)
    fresh.start()
    await embeddings.wait_ready(60)
    start = time.perf_counter()
    await fresh.search(user_id, "first recall after a restart", 5)
    cold = time.perf_counter() - start
    path.unlink()
    fresh2 = MemoryService(MemoryRepository(db), embeddings, tasks, service.config)
    start = time.perf_counter()
    await fresh2._entry(user_id, None)  # noqa: SLF001 - the load alone
    rebuild = time.perf_counter() - start
    await fresh2.close()
    label = f"{size // 1000}k index"
    return [
        Row("P4", "memory", f"cold load of a {label}: file read + FAISS", f"{file_only * 1000:.0f} ms"),
        Row("P4", "memory", f"cold first recall of a {label} (load + check against DB + search)", f"{cold * 1000:.0f} ms"),
        Row("P4", "memory", f"rebuild of a {label} from the database (file missing)", f"{rebuild * 1000:.0f} ms"),
    ]


async def run(sizes: list[int], runs: int, pin_threads: bool) -> list[Row]:
    cpus = CpuPlan.for_process(pin_threads)  # as the bot plans them (BOT_PIN_THREADS)
    rows: list[Row] = [Row("P4", "memory", "worker threads", cpus.describe())]
    with tempfile.TemporaryDirectory(prefix="arium-bench-memory-") as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/bench.db", worker_cpus=cpus.storage)
        await db.migrate()
        users = UserRepository(db, "UTC")
        for user_id in range(1, len(sizes) + 1):
            await users.touch(UserProfile(user_id, f"user{user_id}"), "user")
        start = time.perf_counter()
        embedder = await asyncio.to_thread(SentenceTransformerEmbedder, int8=True)  # as the bot runs it
        rows.append(Row("P4", "memory", "embedding model load (import + weights)", f"{time.perf_counter() - start:.1f} s"))
        index_dir = Path(tmp) / "memory"
        tasks = TaskTracker()
        embeddings = EmbeddingService(lambda: embedder, tasks, cpus=cpus.embedder)
        service = MemoryService(
            MemoryRepository(db), embeddings, tasks, MemoryConfig(index_dir=index_dir, cache_vectors=2_000_000)
        )
        service.start()
        await embeddings.wait_ready(60)
        rows += await embedding_rows(service, runs)
        for user_id, size in enumerate(sizes, 1):
            start = time.perf_counter()
            vocabulary = await seed_user(db, user_id, size, embedder.name, embedder.dim)
            seeded = time.perf_counter() - start
            rows += await latency_rows(service, user_id, size, runs, vocabulary)
            rows.append(Row("P4", "memory", f"seeding {size // 1000}k rows (bench setup, SQLite + FTS5)", f"{seeded:.1f} s"))
        rows += await cold_load_rows(db, service, len(sizes), index_dir, sizes[-1], cpus)
        await db.dispose()
    return rows


def print_table(rows: list[Row], seconds: float) -> None:
    print(f"Memory benchmark, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, {seconds:.0f} s")
    print()
    print("| measure | value | budget | result |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.measure} | {row.value} | {row.budget} | {row.result} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k memories only")
    parser.add_argument("--runs", type=int, default=300, help="measured recalls per size (default 300)")
    parser.add_argument("--limit", type=float, default=170.0, help="stop after this many seconds")
    parser.add_argument("--no-pinning", action="store_true",
                        help="leave the embedder and SQLite threads unpinned (as BOT_PIN_THREADS=false)")
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    start = time.perf_counter()
    try:
        rows = asyncio.run(asyncio.wait_for(run(sizes, args.runs, not args.no_pinning), args.limit))
    except TimeoutError:
        print(f"| memory benchmark | timed out after {args.limit:.0f} s | - | FAIL |")
        return 1
    print_table(rows, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

