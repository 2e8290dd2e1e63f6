"""Per-user FAISS indexes: the vectors, their files, and a bounded cache.

Everything here is synchronous and may be slow (FAISS, file I/O): the memory
service calls it on worker threads, never on the event loop.

Two kinds of index. Most users get the exact one (a flat scan). Past a size
threshold a flat scan reads too much memory per query (150 MB at 100k
vectors, ~10 ms on this hardware), so a very large user gets a sketched index:
random-rotation sign bits pick candidates by Hamming distance and the stored
float vectors rescore them exactly (see SketchIndex). ``fit`` moves an index
between the kinds as it grows or shrinks.

A file is a cache of the database, so it only has to say whether it can be
trusted: a header line (format, index kind, embedding model, dimension,
vector count, CRC32 of the payload, the time of the snapshot and the user's
memory version it reflects) and FAISS's own serialization. Anything that
does not check out raises IndexFileError and the caller rebuilds from the
database. Files are replaced atomically, so processes sharing the folder
only ever read whole files, and the version tells whether one is current.
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


EXACT = "exact"
SKETCH = "sketch"


class VectorIndex:
    """IndexIDMap over IndexFlatIP: exact inner-product search over unit
    vectors (cosine similarity), addressed by memory id."""

    kind = EXACT

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

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, for moving to another kind."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        flat = faiss.downcast_index(self._index.index)
        return ids, flat.reconstruct_n(0, self.size).reshape(self.size, self.dim)

    def serialize(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def deserialize(cls, payload: bytes | memoryview, dim: int) -> VectorIndex:
        return cls(dim, _read_id_map(payload, dim, faiss.IndexIDMap))


# Sign bits per vector in a SketchIndex, and how many candidates those bits
# propose for exact rescoring. Measured on 100k random unit vectors (the
# hardest case: no cluster structure): 1536 bits and 1024 candidates find
# 98% of the exact top 5 in ~3 ms on one core, against ~10 ms for the flat
# scan; 768 bits found 87%.
SKETCH_BITS = 1536
SKETCH_CANDIDATES = 1024
SKETCH_TRAINING = 20_000  # vectors sampled to place the per-bit thresholds


class SketchIndex(VectorIndex):
    """Approximate search for very large users, in three FAISS parts:
    ``_index`` keeps the float vectors (IndexIDMap2 over IndexFlatIP, so they
    can be read back by id); ``_encoder`` (an empty IndexLSH: a random
    rotation, then per-bit thresholds trained on the data, so vectors that
    all lean the same way still split) turns a vector into 1536 sign bits;
    ``_codes`` keeps those bits by id. A query scans the bits of every vector
    (an eighth of the floats' bytes) and reads the floats of only the best
    candidates."""

    kind = SKETCH

    def __init__(
        self, dim: int, store: faiss.IndexIDMap2, encoder: faiss.IndexLSH, codes: faiss.IndexBinaryIDMap
    ) -> None:
        super().__init__(dim, store)
        self._encoder = encoder
        self._codes = codes
        # Counting-based selection instead of a heap: with 1024 candidates
        # out of 100k it is ~25% faster. A runtime flag, so set on every load.
        faiss.downcast_IndexBinary(codes.index).use_heap = False

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray) -> SketchIndex:
        encoder = faiss.IndexLSH(dim, SKETCH_BITS, True, True)
        sample = vectors if len(vectors) <= SKETCH_TRAINING else vectors[
            np.random.default_rng(len(vectors)).choice(len(vectors), SKETCH_TRAINING, replace=False)
        ]
        encoder.train(np.ascontiguousarray(sample, dtype=np.float32))
        codes = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(SKETCH_BITS))
        index = cls(dim, faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), encoder, codes)
        index.upsert(ids, vectors)
        return index

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        return self._encoder.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))

    def upsert(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        id_array = np.fromiter(ids, dtype=np.int64)
        super().upsert(id_array, vectors)
        if len(id_array):
            self._codes.remove_ids(id_array)
            self._codes.add_with_ids(self._encode(vectors), id_array)

    def remove(self, ids: Iterable[int]) -> int:
        id_array = np.fromiter(ids, dtype=np.int64)
        self._codes.remove_ids(id_array)
        return super().remove(id_array)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self.size == 0 or k <= 0:
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        _, found = self._codes.search(self._encode(query), min(max(SKETCH_CANDIDATES, k), self.size))
        candidates = found[0][found[0] != -1]
        scores = self._index.reconstruct_batch(candidates) @ query[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(candidates[i]), float(scores[i])) for i in best]

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return ids, self._index.reconstruct_batch(ids)

    def serialize(self) -> bytes:
        return _pack(
            faiss.serialize_index(self._index).tobytes(),
            faiss.serialize_index(self._encoder).tobytes(),
            faiss.serialize_index_binary(self._codes).tobytes(),
        )

    @classmethod
    def deserialize(cls, payload: bytes | memoryview, dim: int) -> SketchIndex:
        store_bytes, encoder_bytes, codes_bytes = _unpack(payload, 3)
        store = _read_id_map(store_bytes, dim, faiss.IndexIDMap2)
        encoder = faiss.deserialize_index(np.frombuffer(encoder_bytes, dtype=np.uint8))
        if type(encoder) is not faiss.IndexLSH or encoder.d != dim or not encoder.is_trained:
            raise IndexFileError("sketch encoder is not a trained IndexLSH of the expected dimension")
        codes = faiss.deserialize_index_binary(np.frombuffer(codes_bytes, dtype=np.uint8))
        if type(codes) is not faiss.IndexBinaryIDMap or codes.d != encoder.nbits:
            raise IndexFileError("sketch codes do not match the encoder")
        ids = (faiss.vector_to_array(part.id_map) for part in (store, codes))
        if not np.array_equal(*(np.sort(a) for a in ids)):
            raise IndexFileError("sketch codes and vectors hold different ids")
        return cls(dim, store, encoder, codes)


def _pack(*parts: bytes) -> bytes:
    """Parts behind 8-byte little-endian lengths."""
    return b"".join(len(part).to_bytes(8, "little") + part for part in parts)


def _unpack(payload: bytes | memoryview, count: int) -> list[memoryview]:
    view, parts, offset = memoryview(payload), [], 0
    for _ in range(count):
        length = int.from_bytes(view[offset : offset + 8], "little")
        offset += 8
        if offset + length > len(view):
            raise IndexFileError("index parts do not add up")
        parts.append(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise IndexFileError("index parts do not add up")
    return parts


KINDS: dict[str, type[VectorIndex]] = {EXACT: VectorIndex, SKETCH: SketchIndex}


def _read_id_map(payload: bytes | memoryview, dim: int, expected: type) -> faiss.IndexIDMap:
    index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
    if type(index) is not expected or index.d != dim:
        raise IndexFileError(f"not an {expected.__name__} of the expected dimension")
    return index


def kind_for(size: int, current: str, exact_max: int) -> str:
    """The kind an index of ``size`` vectors should be. Sketched above
    ``exact_max``; back to exact only below half of it, so an index hovering
    at the threshold is not rebuilt at every write."""
    if size > exact_max:
        return SKETCH
    if current == SKETCH and size > exact_max // 2:
        return SKETCH
    return EXACT


def fit(index: VectorIndex, exact_max: int) -> VectorIndex:
    """``index`` itself if it is the right kind for its size, else the same
    vectors in the right kind (seconds at 100k: train, rotate, copy)."""
    wanted = kind_for(index.size, index.kind, exact_max)
    if wanted == index.kind:
        return index
    ids, vectors = index.contents()
    if wanted == SKETCH:
        return SketchIndex.build(index.dim, ids, vectors)
    exact = VectorIndex(index.dim)
    exact.upsert(ids, vectors)
    return exact


@dataclass(frozen=True)
class IndexHeader:
    model: str
    dim: int
    count: int
    crc32: int
    snapshot_at: str  # ISO time: rows updated after it must be re-read
    kind: str = EXACT  # files written before sketched indexes existed are exact
    # users.memory_version the index reflects; None in files written before
    # versions existed (then checked against the rows instead).
    memory_version: int | None = None


def save_index(
    path: Path, index: VectorIndex, model: str, snapshot_at: datetime, memory_version: int | None = None
) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename."""
    payload = index.serialize()
    header = IndexHeader(
        model, index.dim, index.size, zlib.crc32(payload), snapshot_at.isoformat(), index.kind, memory_version
    )
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
    index, header = read_index(path, model, dim)
    return index, datetime.fromisoformat(header.snapshot_at)


def read_index(path: Path, model: str, dim: int) -> tuple[VectorIndex, IndexHeader]:
    """The saved index and its header, or IndexFileError saying why not."""
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
        datetime.fromisoformat(header.snapshot_at)
    except (ValueError, TypeError) as exc:
        raise IndexFileError(f"bad header: {exc}") from None
    if header.model != model or header.dim != dim:
        raise IndexFileError(f"built with {header.model} ({header.dim} dims)")
    if header.kind not in KINDS:
        raise IndexFileError(f"unknown index kind {header.kind!r}")
    payload = memoryview(data)[line_end + 1 :]  # no copy of a file that can be 150 MB
    if line_end < 0 or zlib.crc32(payload) != header.crc32:
        raise IndexFileError("checksum mismatch (corrupt or truncated)")
    try:
        index = KINDS[header.kind].deserialize(payload, dim)
    except RuntimeError as exc:  # FAISS reports unreadable data as RuntimeError
        raise IndexFileError(f"unreadable by FAISS: {exc}") from None
    if index.size != header.count:
        raise IndexFileError("vector count does not match the header")
    return index, header


@dataclass
class CachedIndex:
    index: VectorIndex
    unsaved_changes: int = 0
    # The user's memory version the index reflects (None: the user had no
    # row). A number older than the database's means another process wrote.
    version: int | None = None


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
