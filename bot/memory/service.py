"""MemoryService: what the rest of the bot asks of long-term memory.

The memories table is the truth; each user's FAISS index is a cache of its
vectors, loaded on demand (from its file, reconciled with the database) into
a bounded LRU and saved atomically now and then. Recall fuses dense search
(FAISS) with keyword search by reciprocal rank, each side above its own
relevance bar. Every call takes the user id and touches only that user's
rows, index and file.

Concurrency: FAISS and file work run on a small thread pool; one asyncio lock
per user orders index loads, writes, searches and saves of that user.

Several processes over one database (the scaled mode): every change to a
user's memories bumps users.memory_version in its transaction, and each
cached index (and its file) records the version it reflects. A search gets
the user's version from its own keyword statement (a primary-key read of
its own only when that matched nothing), while the query is embedded, and
when another process has written since, rebuilds the index from the rows
before searching it. This process's own writes carry their new
version back, so mirroring them needs no rebuild. Processes may share the
index folder: files are replaced atomically and trusted only at the
database's version.
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

from bot.errors import EmbedderUnavailable, IndexFileError, StorageError
from bot.memory.keyword import query_terms
from bot.memory.embedder import MAX_BATCH_TEXTS, EmbeddingService
from bot.memory.index import (
    CachedIndex, IndexCache, IndexHeader, VectorIndex, fit, kind_for, read_index, save_index,
)
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
        self._write_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._loads: dict[int, asyncio.Task[CachedIndex | None]] = {}
        # Counts the times each user deleted memories themselves (a command,
        # a tool): extraction still waiting to run drops turns from before.
        self._user_deletions: dict[int, int] = {}
        # Indexes built from the database rows (no usable file, or another
        # process changed the memories): what multi-process use costs.
        self.rebuilds = 0

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
        keyword_half = asyncio.ensure_future(
            self.repository.keyword_records_and_version(user_id, query, pool) if keyword else _no_keyword_hits()
        )
        dense_hits, (keyword_found, _) = await asyncio.gather(
            self._dense(user_id, query, pool, wait, vector, lambda: self._version_after(keyword_half, user_id))
            if dense else _nothing(),
            keyword_half,
        )
        return await self._fuse(user_id, dense_hits, keyword_found, k)

    async def _version_after(
        self, keyword_half: asyncio.Future[tuple[list[MemoryRecord], int | None]], user_id: int
    ) -> int | None:
        """The user's memory version for checking the cached index: brought
        by the keyword statement, else (no content words, keyword search off)
        read on its own."""
        _, version = await asyncio.shield(keyword_half)  # a dense half giving up leaves the keyword half running
        return version if version is not None else await self.repository.version(user_id)

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

    def prefetch(self, user_id: int, query: str) -> None:
        """The query embedding of a recall about to come, started now (the
        message is still passing the gates and being stored): only where
        that recall would embed it, i.e. a user whose loaded index holds
        memories, and a query with content words."""
        query = " ".join(query.split())[:2000]
        if not query or self.policy.k <= 0 or not self.embeddings.ready or not query_terms(query):
            return
        entry = self._cache.get(user_id)
        if entry is not None and entry.index.size > 0:
            self.embeddings.prefetch(query)

    async def nearest(self, user_id: int, text: str, vector: np.ndarray | None, k: int) -> list[Hit]:
        """Stored memories close to a new fact, for deciding add / update / nothing."""
        return await self.search(user_id, text, k, vector=vector)

    async def _dense(
        self, user_id: int, query: str, k: int, wait: float | None, vector: np.ndarray | None,
        version: Callable[[], Awaitable[int | None]],
    ) -> list[tuple[int, float]]:
        """``wait`` bounds the whole dense half: right after a start that
        includes the embedder's load (a fraction of a second once its ONNX
        export exists) and the user's index (milliseconds for a small one),
        so the first turns recall as well as later ones. ``version`` tells
        the user's memory version in the database, to check a cached index."""
        deadline = None if wait is None else asyncio.get_running_loop().time() + wait
        if vector is not None:
            return await self._search_vector(user_id, vector, k, _left(deadline), version)
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
        if entry is not None and entry.index.size == 0:
            # Empty here, but another process may have added some since.
            entry = await self._up_to(user_id, entry, await version(), _left(deadline))
        if entry is None or entry.index.size == 0:
            return []
        try:
            # The version comes while the query is embedded: checking the
            # cached index against it costs no time.
            vector, current = await asyncio.wait_for(
                asyncio.gather(self.embeddings.encode_one(query), version()), _left(deadline)
            )
        except TimeoutError:
            log.info("query embedding took longer than %.2f s; keyword recall only", wait or 0)
            return []
        except EmbedderUnavailable:
            return []
        fresh = await self._up_to(user_id, entry, current, _left(deadline))
        return [] if fresh is None else await self._search_entry(user_id, fresh, vector, k)

    async def _search_vector(
        self, user_id: int, vector: np.ndarray, k: int, wait: float | None,
        version: Callable[[], Awaitable[int | None]],
    ) -> list[tuple[int, float]]:
        """Search with a query vector the caller has: the cached index is
        searched while the user's version comes; if another process wrote
        meanwhile, the index is rebuilt and searched again."""
        entry = await self._entry(user_id, wait)
        if entry is None:
            return []
        found, current = await asyncio.gather(self._search_entry(user_id, entry, vector, k), version())
        if not _behind(entry.version, current):
            return found
        fresh = await self._refresh(user_id, current, wait)
        return [] if fresh is None else await self._search_entry(user_id, fresh, vector, k)

    async def _search_entry(
        self, user_id: int, entry: CachedIndex, vector: np.ndarray, k: int
    ) -> list[tuple[int, float]]:
        async with self._lock(user_id):
            found = await self._run(entry.index.search, vector, k)
        return relevant_dense(found, self.policy)

    async def _up_to(
        self, user_id: int, entry: CachedIndex, version: int | None, wait: float | None
    ) -> CachedIndex | None:
        """``entry``, or if it misses changes the database has at ``version``,
        the index rebuilt."""
        return await self._refresh(user_id, version, wait) if _behind(entry.version, version) else entry

    async def _refresh(self, user_id: int, version: int | None, wait: float | None) -> CachedIndex | None:
        """The user's index at ``version`` (read from the database) or later:
        the cached one if this process's own write has brought it there
        meanwhile, else loaded again, which rebuilds it from the rows (None
        if that takes longer than ``wait``; it goes on in the background)."""
        async with self._lock(user_id):
            entry = self._cache.get(user_id)
            if entry is not None and not _behind(entry.version, version):
                return entry
            if entry is not None:
                log.info("memory index of user %s is at version %s, the database at %s (another process wrote)",
                         user_id, entry.version, version)
                self._cache.pop(user_id)
        return await self._entry(user_id, wait)

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
        async with self._writing(user_id):
            written = await self.repository.add(user_id, items, blobs, model)
            records = written.value
            await self._apply(user_id, written.version, upsert=[r.id for r in records] if vectors is not None else [],
                              vectors=vectors, stale=vectors is None)
        await self.enforce_cap(user_id)
        return records

    async def made_by(self, user_id: int, idempotency_key: str) -> MemoryRecord | None:
        """The memory a tool call (RequestContext.tool_call_key) stored, if any."""
        return await self.repository.made_by(user_id, idempotency_key)

    async def update(
        self, user_id: int, memory_id: int, text: str, *, kind: str | None = None, importance: int | None = None,
        expires_at: datetime | None = None,
    ) -> MemoryRecord | None:
        vectors = await self._try_encode([text])
        async with self._writing(user_id):
            written = await self.repository.update(
                user_id,
                memory_id,
                text_=text,
                embedding=_vector_bytes(vectors[0]) if vectors is not None else None,
                model=self.embeddings.name if vectors is not None else None,
                kind=kind,
                importance=importance,
                expires_at=expires_at,
            )
            await self._apply(user_id, written.version, upsert=[memory_id] if vectors is not None else [],
                              vectors=vectors, remove=[] if vectors is not None else [memory_id],
                              stale=vectors is None)
        return written.value

    async def delete(self, user_id: int, ids: Sequence[int], *, by_user: bool = True) -> list[int]:
        """``by_user``: the user asked for it (False when extraction replaces
        an outdated fact)."""
        if by_user:
            self._note_user_deletion(user_id)
        async with self._writing(user_id):
            written = await self.repository.delete(user_id, ids)
            await self._apply(user_id, written.version, remove=written.value)
        deleted = written.value
        if by_user and deleted and self._on_user_deletion is not None:
            await self._on_user_deletion(user_id)
        return deleted

    async def delete_all(self, user_id: int) -> int:
        self._note_user_deletion(user_id)
        async with self._lock(user_id):
            count = (await self.repository.delete_all(user_id)).value
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
        async with self._writing(user_id):
            written = await self.repository.evict_over_cap(user_id, self.config.max_per_user)
            await self._apply(user_id, written.version, remove=written.value)
        if written.value:
            log.info("user %s reached the memory cap; forgot %d least important", user_id, len(written.value))
        return written.value

    async def sweep_expired(self, user_id: int | None = None) -> int:
        gone, versions = await self.repository.delete_expired(user_id)
        by_user: dict[int, list[int]] = {}
        for owner, memory_id in gone:
            by_user.setdefault(owner, []).append(memory_id)
        for owner, ids in by_user.items():
            await self._apply(owner, versions.get(owner), remove=ids)
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
        return _lock_of(self._locks, user_id)

    def _writing(self, user_id: int) -> asyncio.Lock:
        """Held from a write of the user's memories until the cached index
        mirrors it: this process's writes then reach the index in the order
        of their versions, so only another process's write leaves a gap.
        (Their commits queue anyway: behind SQLite's one writer, or the row
        lock the version's bump takes on PostgreSQL.)"""
        return _lock_of(self._write_locks, user_id)

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
        """Held under the user's lock. A saved file is used only at the
        user's memory version in the database, and even then checked against
        the rows: rows added, deleted or changed since its snapshot are
        applied (a file from before versions existed gets only that check).
        A missing or broken file, or one at another version (another process
        wrote since, or this one stopped before saving), means a full rebuild:
        only the rows are sure to be right across processes and clocks."""
        # Read before the rows: they then show this version or a newer one,
        # so the index is never tagged newer than what it holds.
        version = await self.repository.version(user_id)
        model, dim = self.embeddings.name, self.embeddings.dim
        in_db, pending = await self.repository.indexed_state(user_id, model)
        if pending:
            embedded, version = await self._embed_pending(user_id, pending, model, version)
            in_db |= embedded
        try:
            index, header = await self._run(read_index, self._index_path(user_id), model, dim)
            _check_version(header, version)
        except IndexFileError as exc:
            return await self._rebuild(user_id, in_db, model, version, exc)
        snapshot_at = datetime.fromisoformat(header.snapshot_at)
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
        return CachedIndex(fitted, unsaved_changes=len(extra) + len(missing) + converted, version=version)

    async def _rebuild(
        self, user_id: int, in_db: set[int], model: str, version: int | None, reason: IndexFileError
    ) -> CachedIndex:
        """The user's index from the stored vectors alone."""
        if in_db or str(reason) != "missing":
            log.info("memory index of user %s: %s; rebuilding from the database", user_id, reason)
        self.rebuilds += 1
        index = VectorIndex(self.embeddings.dim)
        if in_db:  # nothing embedded with this model: no vectors to read (a new user)
            await self._add_stored(user_id, index, None, model)
        index = await self._run(fit, index, self.config.exact_search_max)
        return CachedIndex(index, unsaved_changes=index.size or int(str(reason) != "missing"), version=version)

    async def _add_stored(self, user_id: int, index: VectorIndex, ids: list[int] | None, model: str) -> None:
        """Put stored vectors (all of the user's, or these ids) into ``index``."""
        batches = [None] if ids is None else _chunks(ids, ID_CHUNK)
        for batch in batches:
            stored = await self.repository.vectors(user_id, batch, model)
            matrix = _matrix([v.embedding for v in stored], index.dim)
            await self._run(index.upsert, [v.id for v in stored], matrix)

    async def _embed_pending(
        self, user_id: int, pending: list[int], model: str, version: int | None
    ) -> tuple[set[int], int | None]:
        """Embed rows stored before the model was ready, or with another model;
        returns the ids now embedded with ``model`` and the memory version
        the index being loaded reflects after these writes of its own."""
        done: set[int] = set()
        for batch in _chunks(pending, MAX_BATCH_TEXTS * 4):
            if self._tasks.closing:
                break  # the rest waits for the next start
            texts = await self.repository.texts(user_id, batch)
            ids = list(texts)
            vectors = await self._try_encode([texts[i] for i in ids])
            if vectors is None:
                break
            written = await self.repository.set_embeddings(
                user_id, {i: _vector_bytes(v) for i, v in zip(ids, vectors, strict=True)}, model
            )
            # Another process's write in between keeps the older number: the
            # next search then rebuilds, rather than trust a guess.
            if version is not None and written == version + 1:
                version = written
            done.update(ids)
        return done, version

    async def _apply(
        self,
        user_id: int,
        version: int | None,
        *,
        upsert: Sequence[int] = (),
        vectors: np.ndarray | None = None,
        remove: Sequence[int] = (),
        stale: bool = False,
    ) -> None:
        """Mirror a committed database change, which made memory ``version``
        (None: it changed nothing), in the cached index, if loaded.
        ``stale``: the change could not be mirrored (no embedding yet), so the
        cached copy is dropped and the next load rebuilds it."""
        if version is None:
            return
        async with self._lock(user_id):
            entry = self._cache.get(user_id)
            if entry is None or (entry.version is not None and version <= entry.version):
                return  # nothing cached, or loaded after this write: it holds it already
            if stale or entry.version is None or version != entry.version + 1:
                # Not mirrored: no vector yet, or a gap (another process wrote
                # in between, and patching this copy would not make it right).
                # The next load rebuilds it.
                self._cache.pop(user_id)
                return
            entry.version = version
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
            if not await self._at_version(user_id, entry.version):
                # Behind the database: worth no file (the next save or search
                # sees to it). Above all, a copy another process made stale by
                # erasing the memories must not write their vectors back.
                return
            snapshot_at = utcnow()
            changes = entry.unsaved_changes
            model = self.embeddings.name
            path = self._index_path(user_id)
            await self._run(save_index, path, entry.index, model, snapshot_at, entry.version)
            entry.unsaved_changes -= changes
            if await self._erased_since(user_id, entry.version):
                await self._run(path.unlink, True)  # no vectors of erased memories stay on disk

    async def _at_version(self, user_id: int, version: int | None) -> bool:
        """Whether the user's memories in the database are still at ``version``
        (False when the database cannot say: a save can wait)."""
        try:
            return await self.repository.version(user_id) == version
        except StorageError as exc:
            log.warning("memory version of user %s unreadable (%s); index not saved", user_id, exc)
            return False

    async def _erased_since(self, user_id: int, version: int | None) -> bool:
        """Whether the user's memories were all deleted after ``version``."""
        try:
            return await self.repository.version(user_id) != version and not await self.repository.has_any(user_id)
        except StorageError:
            return False  # the file is tagged with its version: no process trusts it past a change


async def _nothing() -> list[T]:
    return []


async def _no_keyword_hits() -> tuple[list[MemoryRecord], int | None]:
    return [], None


def _lock_of(locks: weakref.WeakValueDictionary[int, asyncio.Lock], user_id: int) -> asyncio.Lock:
    lock = locks.get(user_id)
    if lock is None:
        lock = asyncio.Lock()
        locks[user_id] = lock
    return lock


def _behind(cached: int | None, stored: int | None) -> bool:
    """Whether an index at memory version ``cached`` misses changes the
    database had at ``stored``. A smaller stored number is a read from before
    a write of this process that the index already holds. None is a user
    without a row: gone since, or created since."""
    if cached is None or stored is None:
        return cached != stored
    return stored > cached


def _check_version(header: IndexHeader, version: int | None) -> None:
    """A file saved at another memory version than the database's is stale."""
    if header.memory_version is not None and header.memory_version != version:
        raise IndexFileError(f"saved at memory version {header.memory_version}, the database is at {version}")


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative), or None for no limit."""
    if deadline is None:
        return None
    return max(0.0, deadline - asyncio.get_running_loop().time())
