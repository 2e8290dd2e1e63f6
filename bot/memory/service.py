"""MemoryService: what the rest of the bot asks of long-term memory.

The memories table is the truth; each user's FAISS index is a cache of its
vectors, loaded on demand (from its file, reconciled with the database) into
a bounded LRU and saved atomically now and then. Recall fuses dense search
(FAISS) with keyword search by reciprocal rank, each side above its own
relevance bar. Every call takes the user id and touches only that user's
rows, index and file.

Concurrency: FAISS and file work run on a small thread pool; one asyncio lock
per user orders index loads, writes, searches and saves of that user.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import faiss
import numpy as np

from bot.errors import EmbedderUnavailable, IndexFileError
from bot.memory.keyword import query_terms
from bot.memory.embedder import MAX_BATCH_TEXTS, EmbeddingService
from bot.memory.index import CachedIndex, IndexCache, VectorIndex, fit, kind_for, load_index, save_index
from bot.memory.records import Hit, MemoryRecord, NewMemory
from bot.memory.relevance import RecallPolicy, fuse, relevant_dense
from bot.memory.repository import MemoryRepository
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# Rows updated this long before a saved snapshot are re-read on load anyway,
# covering writes that were committed but not yet applied when it was taken.
SNAPSHOT_MARGIN = timedelta(seconds=60)
# Save an index once its unsaved changes reach 1/SAVE_RATIO of its size
# (small indexes: at every change). Changes lost in a crash are not lost
# data: the next load re-reads them from the database.
SAVE_RATIO = 20
SMALL_INDEX = 2_000
ID_CHUNK = 10_000  # ids per IN (...) list; both databases cap bound parameters
# What a search without a time limit (extraction's neighbours) waits for the
# embedder to finish loading.
UNBOUNDED_LOAD_WAIT = 120.0


@dataclass(frozen=True)
class MemoryConfig:
    index_dir: Path
    max_per_user: int = 10_000
    cache_vectors: int = 500_000
    ephemeral_days: int = 7
    # How many memories a turn gets, the relevance bar and the fusion.
    policy: RecallPolicy = field(default_factory=RecallPolicy)
    # What a chat turn waits for the dense half of recall (the embedder's load
    # right after a start, a cold index load, the query embedding); past it,
    # the turn goes ahead with keyword hits.
    recall_wait: float = 1.0
    # Past this many vectors a user's index is sketched (approximate, ~3x
    # faster at 100k); the default per-user cap keeps everyone exact.
    exact_search_max: int = 20_000


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def _matrix(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MemoryService:
    def __init__(
        self,
        repository: MemoryRepository,
        embeddings: EmbeddingService,
        tasks: TaskTracker,
        config: MemoryConfig,
        *,
        on_user_deletion: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """``on_user_deletion``: told (after the rows are gone) whenever a
        user deletes memories themselves, so extraction pending from before
        never brings them back."""
        self.repository = repository
        self._on_user_deletion = on_user_deletion
        self.embeddings = embeddings
        self.config = config
        self.policy = config.policy
        self._tasks = tasks
        # One OpenMP thread per search: a single-query flat search gains little
        # from a second thread and stalls whenever the other core is busy
        # (measured at 100k: 16 ms alone vs 56 ms with two threads on a busy
        # 2-core machine). Two users' searches still run in parallel on the two
        # pool threads. OpenMP's setting is per calling thread, hence the initializer.
        self._executor = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="memory-index", initializer=faiss.omp_set_num_threads, initargs=(1,)
        )
        self._cache = IndexCache(config.cache_vectors)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._loads: dict[int, asyncio.Task[CachedIndex | None]] = {}
        # Counts the times each user deleted memories themselves (a command,
        # a tool): extraction still waiting to run drops turns from before.
        self._user_deletions: dict[int, int] = {}

    # Lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.embeddings.start()
        self._tasks.spawn(self.sweep_expired(), "memory-sweep")
        self._tasks.spawn(self.embed_with_current_model(), "memory-reembed")

    async def embed_with_current_model(self, wait: float = 120.0) -> int:
        """Once the embedder is loaded: every user whose rows hold another
        model's vectors (EMBEDDING_MODEL changed) or none (stored while the
        model was unavailable) gets them embedded with this one, one user at
        a time in the background, so no one's first recall waits for it.
        Meanwhile each index holds only this model's vectors, never a mix:
        rows not re-embedded yet are found by keyword search alone. Returns
        how many users were brought up to date."""
        deadline = asyncio.get_running_loop().time() + wait
        while not await self.embeddings.wait_ready(1.0):
            if self.embeddings.failed or self._tasks.closing or asyncio.get_running_loop().time() > deadline:
                return 0  # each user's next index load does it instead
        model = self.embeddings.name
        users = await self.repository.users_with_other_vectors(model)
        if users:
            log.info("embedding the memories of %d user(s) with %s in the background", len(users), model)
        done = 0
        for user_id in users:
            if self._tasks.closing:
                break
            # Loading embeds what is missing (a cached index has nothing missing:
            # a row stored unembedded drops it from the cache).
            if await self._entry(user_id, None) is not None:
                done += 1
        if users:
            log.info("memories of %d of %d user(s) now embedded with %s", done, len(users), model)
        return done

    async def close(self) -> None:
        """Save every index with unsaved changes, then release the threads."""
        for user_id, entry in self._cache.items():
            if entry.unsaved_changes:
                await self._save(user_id, entry)
        self._executor.shutdown(wait=True)
        await self.embeddings.close()

    # Recall ---------------------------------------------------------------

    async def search(
        self,
        user_id: int,
        query: str,
        k: int,
        *,
        wait: float | None = None,
        dense: bool = True,
        keyword: bool = True,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The user's memories most relevant to ``query``, best first, at most k.
        ``wait`` bounds how long the dense half may take (None: as long as it
        needs); ``vector`` is the query's embedding when the caller has it."""
        query = " ".join(query.split())[:2000]
        if not query or k <= 0:
            return []
        pool = k * self.policy.candidates_per_hit
        dense_hits, keyword_found = await asyncio.gather(
            self._dense(user_id, query, pool, wait, vector) if dense else _nothing(),
            self.repository.keyword_records(user_id, query, pool) if keyword else _nothing(),
        )
        return await self._fuse(user_id, dense_hits, keyword_found, k)

    async def recall(self, user_id: int, query: str) -> list[Hit]:
        """Recall for a chat turn: bounded wait, and the hits count as used.
        Small talk ("ok", "thanks!", "how are you?") recalls nothing and costs
        no query embedding."""
        if not query_terms(query):
            return []
        hits = await self.search(user_id, query, self.policy.k, wait=self.config.recall_wait)
        if hits:
            ids = [hit.memory.id for hit in hits]
            self._spawn(self.repository.touch(user_id, ids), "memory-touch")
        return hits

    async def nearest(self, user_id: int, text: str, vector: np.ndarray | None, k: int) -> list[Hit]:
        """Stored memories close to a new fact, for deciding add / update / nothing."""
        return await self.search(user_id, text, k, vector=vector)

    async def _dense(
        self, user_id: int, query: str, k: int, wait: float | None, vector: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """``wait`` bounds the whole dense half: right after a start that
        includes the embedder's load (a fraction of a second once its ONNX
        export exists) and the user's index (milliseconds for a small one),
        so the first turns recall as well as later ones."""
        deadline = None if wait is None else asyncio.get_running_loop().time() + wait
        if vector is not None:
            return await self._search_vector(user_id, vector, k, _left(deadline))
        if not self.embeddings.ready:
            # Loading: worth a (bounded) wait, for a user with memories to find.
            # Failed or not started: keyword search carries recall.
            if not self.embeddings.loading or not await self.repository.has_any(user_id):
                return []
            left = _left(deadline)
            if not await self.embeddings.wait_ready(UNBOUNDED_LOAD_WAIT if left is None else left):
                return []
        # The index first: a user with no memories costs no embedding at all.
        entry = await self._entry(user_id, _left(deadline))
        if entry is None or entry.index.size == 0:
            return []
        try:
            vector = await asyncio.wait_for(self.embeddings.encode_one(query), _left(deadline))
        except TimeoutError:
            log.info("query embedding took longer than %.2f s; keyword recall only", wait or 0)
            return []
        except EmbedderUnavailable:
            return []
        return await self._search_vector(user_id, vector, k, _left(deadline))

    async def _search_vector(
        self, user_id: int, vector: np.ndarray, k: int, wait: float | None
    ) -> list[tuple[int, float]]:
        entry = await self._entry(user_id, wait)
        if entry is None:
            return []
        async with self._lock(user_id):
            found = await self._run(entry.index.search, vector, k)
        return relevant_dense(found, self.policy)

    async def _fuse(
        self, user_id: int, dense_hits: list[tuple[int, float]], keyword_found: list[MemoryRecord], k: int
    ) -> list[Hit]:
        similarity = dict(dense_hits)
        keyword_rank = {record.id: rank for rank, record in enumerate(keyword_found, 1)}
        fused = fuse(dense_hits, [record.id for record in keyword_found], self.policy)
        scores = dict(fused)
        ranked = [memory_id for memory_id, _ in fused]
        # Keyword hits come with their rows; read the rest (dense-only hits),
        # with a few spares: an expired memory can still sit in an index.
        records = {record.id: record for record in keyword_found}
        missing = [i for i in ranked[: k * 2] if i not in records]
        if missing:
            records.update(await self.repository.get_many(user_id, missing))
        hits = [
            Hit(records[i], scores[i], similarity.get(i), keyword_rank.get(i)) for i in ranked if i in records
        ]
        return hits[:k]

    # Writing --------------------------------------------------------------

    async def add(self, user_id: int, items: Sequence[NewMemory]) -> list[MemoryRecord]:
        """Store new memories (embedded now when the model is ready, else
        later, at the next index load), then apply the per-user cap."""
        if not items:
            return []
        vectors = await self._try_encode([item.text for item in items])
        blobs = [_vector_bytes(v) for v in vectors] if vectors is not None else [None] * len(items)
        model = self.embeddings.name if vectors is not None else None
        records = await self.repository.add(user_id, items, blobs, model)
        await self._apply(user_id, upsert=[r.id for r in records] if vectors is not None else [],
                          vectors=vectors, stale=vectors is None)
        await self.enforce_cap(user_id)
        return records

    async def update(
        self, user_id: int, memory_id: int, text: str, *, kind: str | None = None, importance: int | None = None,
        expires_at: datetime | None = None,
    ) -> MemoryRecord | None:
        vectors = await self._try_encode([text])
        record = await self.repository.update(
            user_id,
            memory_id,
            text_=text,
            embedding=_vector_bytes(vectors[0]) if vectors is not None else None,
            model=self.embeddings.name if vectors is not None else None,
            kind=kind,
            importance=importance,
            expires_at=expires_at,
        )
        if record is not None:
            await self._apply(user_id, upsert=[memory_id] if vectors is not None else [], vectors=vectors,
                              remove=[] if vectors is not None else [memory_id], stale=vectors is None)
        return record

    async def delete(self, user_id: int, ids: Sequence[int], *, by_user: bool = True) -> list[int]:
        """``by_user``: the user asked for it (False when extraction replaces
        an outdated fact)."""
        if by_user:
            self._note_user_deletion(user_id)
        deleted = await self.repository.delete(user_id, ids)
        await self._apply(user_id, remove=deleted)
        if by_user and deleted and self._on_user_deletion is not None:
            await self._on_user_deletion(user_id)
        return deleted

    async def delete_all(self, user_id: int) -> int:
        self._note_user_deletion(user_id)
        async with self._lock(user_id):
            count = await self.repository.delete_all(user_id)
            self._cache.pop(user_id)
            await self._run(self._index_path(user_id).unlink, True)
        if self._on_user_deletion is not None:
            await self._on_user_deletion(user_id)
        return count

    async def drop_index(self, user_id: int) -> None:
        """Forget the user's cached index and its file: the next use rebuilds
        it from the rows (after /link moved memories between users)."""
        async with self._lock(user_id):
            self._cache.pop(user_id)
            await self._run(self._index_path(user_id).unlink, True)

    async def enforce_cap(self, user_id: int) -> list[int]:
        evicted = await self.repository.evict_over_cap(user_id, self.config.max_per_user)
        if evicted:
            log.info("user %s reached the memory cap; forgot %d least important", user_id, len(evicted))
            await self._apply(user_id, remove=evicted)
        return evicted

    async def sweep_expired(self, user_id: int | None = None) -> int:
        gone = await self.repository.delete_expired(user_id)
        by_user: dict[int, list[int]] = {}
        for owner, memory_id in gone:
            by_user.setdefault(owner, []).append(memory_id)
        for owner, ids in by_user.items():
            await self._apply(owner, remove=ids)
        return len(gone)

    def user_deletions(self, user_id: int) -> int:
        """How many times the user has deleted memories since start."""
        return self._user_deletions.get(user_id, 0)

    def _note_user_deletion(self, user_id: int) -> None:
        self._user_deletions[user_id] = self.user_deletions(user_id) + 1

    def ephemeral_expiry(self, days: int | None = None) -> datetime:
        return utcnow() + timedelta(days=days or self.config.ephemeral_days)

    # Reading for lists and exports ------------------------------------------

    async def page(self, user_id: int, page: int, size: int) -> tuple[list[MemoryRecord], int]:
        """One page (0-based) of the user's memories, newest first, and the total."""
        return await self.repository.page(user_id, max(0, page) * size, size)

    async def count(self, user_id: int) -> int:
        return await self.repository.count(user_id)

    async def encode(self, texts: Sequence[str]) -> np.ndarray | None:
        """Vectors for texts, or None while the embedder is not ready."""
        return await self._try_encode(texts)

    # Index plumbing -------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T] | None:
        """Tracked background work, or None once shutdown has begun."""
        try:
            return self._tasks.spawn(coro, name)
        except RuntimeError:
            return None

    def _lock(self, user_id: int) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user_id] = lock
        return lock

    def _index_path(self, user_id: int) -> Path:
        return self.config.index_dir / f"{int(user_id)}.faiss"

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _try_encode(self, texts: Sequence[str]) -> np.ndarray | None:
        if not self.embeddings.ready:
            return None
        try:
            vectors: list[np.ndarray] = []
            for start in range(0, len(texts), MAX_BATCH_TEXTS):
                vectors.append(await self.embeddings.encode(texts[start : start + MAX_BATCH_TEXTS]))
            return np.concatenate(vectors) if vectors else None
        except EmbedderUnavailable:
            return None

    async def _entry(self, user_id: int, wait: float | None) -> CachedIndex | None:
        """The user's index, loading it if needed; None if not ready within ``wait``."""
        entry = self._cache.get(user_id)
        if entry is not None:
            return entry
        task = self._loads.get(user_id)
        if task is None:
            task = self._spawn(self._load(user_id), f"memory-index-load:{user_id}")
            if task is None:  # shutting down: load in this caller
                return await self._load(user_id)
            self._loads[user_id] = task
            task.add_done_callback(lambda _: self._loads.pop(user_id, None))
        try:
            # Shielded: a turn that stops waiting leaves the load running for the next one.
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return None

    async def _load(self, user_id: int) -> CachedIndex | None:
        async with self._lock(user_id):
            entry = self._cache.get(user_id)
            if entry is not None or not self.embeddings.ready:
                return entry
            entry = await self._load_and_reconcile(user_id)
            for evicted_user, evicted in self._cache.put(user_id, entry):
                if evicted.unsaved_changes:
                    self._spawn(self._save(evicted_user, evicted), f"memory-index-save:{evicted_user}")
        if entry.unsaved_changes:
            await self._save(user_id, entry)
        return entry

    async def _load_and_reconcile(self, user_id: int) -> CachedIndex:
        """Held under the user's lock. The saved file is trusted only as far as
        the database agrees: rows added, deleted or changed since its snapshot
        are applied; a missing or broken file means a full rebuild."""
        model, dim = self.embeddings.name, self.embeddings.dim
        in_db, pending = await self.repository.indexed_state(user_id, model)
        if pending:
            in_db |= await self._embed_pending(user_id, pending, model)
        try:
            index, snapshot_at = await self._run(load_index, self._index_path(user_id), model, dim)
        except IndexFileError as exc:
            if in_db or str(exc) != "missing":
                log.info("memory index of user %s: %s; rebuilding from the database", user_id, exc)
            index = VectorIndex(dim)
            if in_db:  # nothing embedded with this model: no vectors to read (a new user)
                await self._add_stored(user_id, index, None, model)
            index = await self._run(fit, index, self.config.exact_search_max)
            return CachedIndex(index, unsaved_changes=index.size or int(str(exc) != "missing"))
        present = await self._run(index.ids)
        extra = present - in_db
        changed = set(await self.repository.changed_since(user_id, snapshot_at - SNAPSHOT_MARGIN))
        missing = (in_db - present) | (changed & in_db)
        if extra:
            await self._run(index.remove, extra)
        if missing:
            await self._add_stored(user_id, index, sorted(missing), model)
        if extra or in_db - present:
            log.info("memory index of user %s was stale (%d added, %d removed); repaired",
                     user_id, len(in_db - present), len(extra))
        # A file of the wrong kind for its size (the threshold changed, or it
        # was saved just before crossing it) is converted, not trusted as is.
        fitted = await self._run(fit, index, self.config.exact_search_max)
        converted = int(fitted is not index)
        if converted:
            log.info("memory index of user %s: %s -> %s at %d vectors", user_id, index.kind, fitted.kind, fitted.size)
        return CachedIndex(fitted, unsaved_changes=len(extra) + len(missing) + converted)

    async def _add_stored(self, user_id: int, index: VectorIndex, ids: list[int] | None, model: str) -> None:
        """Put stored vectors (all of the user's, or these ids) into ``index``."""
        batches = [None] if ids is None else _chunks(ids, ID_CHUNK)
        for batch in batches:
            stored = await self.repository.vectors(user_id, batch, model)
            matrix = _matrix([v.embedding for v in stored], index.dim)
            await self._run(index.upsert, [v.id for v in stored], matrix)

    async def _embed_pending(self, user_id: int, pending: list[int], model: str) -> set[int]:
        """Embed rows stored before the model was ready, or with another model;
        returns the ids now embedded with ``model``."""
        done: set[int] = set()
        for batch in _chunks(pending, MAX_BATCH_TEXTS * 4):
            if self._tasks.closing:
                break  # the rest waits for the next start
            texts = await self.repository.texts(user_id, batch)
            ids = list(texts)
            vectors = await self._try_encode([texts[i] for i in ids])
            if vectors is None:
                break
            await self.repository.set_embeddings(
                user_id, {i: _vector_bytes(v) for i, v in zip(ids, vectors, strict=True)}, model
            )
            done.update(ids)
        return done

    async def _apply(
        self,
        user_id: int,
        *,
        upsert: Sequence[int] = (),
        vectors: np.ndarray | None = None,
        remove: Sequence[int] = (),
        stale: bool = False,
    ) -> None:
        """Mirror a committed database change in the cached index, if loaded.
        ``stale``: the change could not be mirrored (no embedding yet), so the
        cached copy is dropped and the next load reconciles it."""
        async with self._lock(user_id):
            entry = self._cache.get(user_id)
            if entry is None:
                return
            if stale:
                self._cache.pop(user_id)
                return
            if remove:
                await self._run(entry.index.remove, list(remove))
            if upsert and vectors is not None:
                await self._run(entry.index.upsert, list(upsert), vectors)
            entry.unsaved_changes += len(remove) + len(upsert)
            # Checked here, not in a thread: nearly every write keeps its kind.
            converted = kind_for(entry.index.size, entry.index.kind, self.config.exact_search_max) != entry.index.kind
            if converted:
                # Seconds at this size: saved at once below, not redone at the next load.
                entry.index = await self._run(fit, entry.index, self.config.exact_search_max)
            due = (
                converted
                or entry.index.size <= SMALL_INDEX
                or entry.unsaved_changes * SAVE_RATIO >= entry.index.size
            )
        if due:
            # At shutdown the spawn is refused, and close() saves it instead.
            self._spawn(self._save(user_id, entry), f"memory-index-save:{user_id}")

    async def _save(self, user_id: int, entry: CachedIndex) -> None:
        async with self._lock(user_id):
            if not entry.unsaved_changes:
                return
            if self._cache.get(user_id) not in (entry, None):
                return  # replaced by a newer load; that one will be saved
            snapshot_at = utcnow()
            changes = entry.unsaved_changes
            model = self.embeddings.name
            await self._run(save_index, self._index_path(user_id), entry.index, model, snapshot_at)
            entry.unsaved_changes -= changes


async def _nothing() -> list[T]:
    return []


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative), or None for no limit."""
    if deadline is None:
        return None
    return max(0.0, deadline - asyncio.get_running_loop().time())
