"""Per-user FAISS indexes: the vectors, their files, and a bounded cache.

Everything here is synchronous and may be slow (FAISS, file I/O): the memory
service calls it on worker threads, never on the event loop.

A file is a cache of the database, so it only has to say whether it can be
trusted: a header line (format, embedding model, dimension, vector count,
CRC32 of the payload, and the time of the snapshot) and FAISS's own
serialization. Anything that does not check out raises IndexFileError and the
caller rebuilds from the database.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np

from bot.errors import IndexFileError

MAGIC = b"ARIUM-FAISS 1\n"


class VectorIndex:
    """IndexIDMap over IndexFlatIP: exact inner-product search over unit
    vectors (cosine similarity), addressed by memory id."""

    def __init__(self, dim: int, index: faiss.IndexIDMap | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap(faiss.IndexFlatIP(dim))

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> set[int]:
        return set(faiss.vector_to_array(self._index.id_map).tolist())

    def upsert(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        id_array = np.fromiter(ids, dtype=np.int64)
        if len(id_array) == 0:
            return
        if vectors.shape != (len(id_array), self.dim):
            raise ValueError(f"expected {len(id_array)} vectors of {self.dim} dims, got {vectors.shape}")
        # IndexIDMap keeps duplicate ids side by side; replacing means removing first.
        self._index.remove_ids(id_array)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), id_array)

    def remove(self, ids: Iterable[int]) -> int:
        id_array = np.fromiter(ids, dtype=np.int64)
        if len(id_array) == 0:
            return 0
        return int(self._index.remove_ids(id_array))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(id, cosine similarity) of the k nearest, best first."""
        if self.size == 0 or k <= 0:
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        scores, ids = self._index.search(query, min(k, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def serialize(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def deserialize(cls, payload: bytes | memoryview, dim: int) -> VectorIndex:
        index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        if not isinstance(index, faiss.IndexIDMap) or index.d != dim:
            raise IndexFileError("not an IndexIDMap of the expected dimension")
        return cls(dim, index)


@dataclass(frozen=True)
class IndexHeader:
    model: str
    dim: int
    count: int
    crc32: int
    snapshot_at: str  # ISO time: rows updated after it must be re-read


def save_index(path: Path, index: VectorIndex, model: str, snapshot_at: datetime) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename."""
    payload = index.serialize()
    header = IndexHeader(model, index.dim, index.size, zlib.crc32(payload), snapshot_at.isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC)
            out.write(json.dumps(header.__dict__).encode() + b"\n")
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_index(path: Path, model: str, dim: int) -> tuple[VectorIndex, datetime]:
    """The saved index and its snapshot time, or IndexFileError saying why not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexFileError("missing") from None
    except OSError as exc:
        raise IndexFileError(f"unreadable: {exc}") from exc
    if not data.startswith(MAGIC):
        raise IndexFileError("not an index file")
    line_end = data.find(b"\n", len(MAGIC))
    try:
        header = IndexHeader(**json.loads(data[len(MAGIC) : line_end]))
        snapshot_at = datetime.fromisoformat(header.snapshot_at)
    except (ValueError, TypeError) as exc:
        raise IndexFileError(f"bad header: {exc}") from None
    if header.model != model or header.dim != dim:
        raise IndexFileError(f"built with {header.model} ({header.dim} dims)")
    payload = memoryview(data)[line_end + 1 :]  # no copy of a file that can be 150 MB
    if line_end < 0 or zlib.crc32(payload) != header.crc32:
        raise IndexFileError("checksum mismatch (corrupt or truncated)")
    try:
        index = VectorIndex.deserialize(payload, dim)
    except RuntimeError as exc:  # FAISS reports unreadable data as RuntimeError
        raise IndexFileError(f"unreadable by FAISS: {exc}") from None
    if index.size != header.count:
        raise IndexFileError("vector count does not match the header")
    return index, snapshot_at


@dataclass
class CachedIndex:
    index: VectorIndex
    unsaved_changes: int = 0


class IndexCache:
    """Loaded indexes, least recently used first out once the total number of
    vectors passes ``max_vectors`` or the number of indexes passes
    ``max_entries`` (many users with few memories); the newest always stays.
    The caller saves evicted entries that have unsaved changes."""

    def __init__(self, max_vectors: int, max_entries: int = 10_000) -> None:
        self._max_vectors = max_vectors
        self._max_entries = max_entries
        self._entries: OrderedDict[int, CachedIndex] = OrderedDict()

    def get(self, user_id: int) -> CachedIndex | None:
        entry = self._entries.get(user_id)
        if entry is not None:
            self._entries.move_to_end(user_id)
        return entry

    def put(self, user_id: int, entry: CachedIndex) -> list[tuple[int, CachedIndex]]:
        """Cache ``entry``; returns what had to leave to stay within the bound."""
        self._entries[user_id] = entry
        self._entries.move_to_end(user_id)
        return self.shrink()

    def shrink(self) -> list[tuple[int, CachedIndex]]:
        evicted: list[tuple[int, CachedIndex]] = []
        while len(self._entries) > 1 and (
            len(self._entries) > self._max_entries or self.total_vectors > self._max_vectors
        ):
            user_id, entry = self._entries.popitem(last=False)
            evicted.append((user_id, entry))
        return evicted

    def pop(self, user_id: int) -> CachedIndex | None:
        return self._entries.pop(user_id, None)

    @property
    def total_vectors(self) -> int:
        return sum(entry.index.size for entry in self._entries.values())

    def items(self) -> list[tuple[int, CachedIndex]]:
        return list(self._entries.items())

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._entries
