"""EmbeddingService: one thread, requests batched while a batch runs, each
caller gets its own rows, and failures stay with the batch that failed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from bot.memory.embedder import Embedder, EmbeddingService
from bot.runtime.tasks import TaskTracker

DIM = 8
WAIT = 5.0  # seconds a thread event may take before the test fails


class GatedEmbedder(Embedder):
    """Encodes a text as the one-hot row of its length, records every call,
    and can hold a call on the thread until the test lets it go."""

    name = "gated"
    dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.started.set()
        if not self.gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        if "boom" in texts:
            raise RuntimeError("the model failed on this batch")
        return np.stack([one_hot(text) for text in texts])


def one_hot(text: str) -> np.ndarray:
    row = np.zeros(DIM, dtype=np.float32)
    row[len(text) % DIM] = 1.0
    return row


@pytest.fixture
async def gated() -> GatedEmbedder:
    return GatedEmbedder()


@pytest.fixture
async def service(gated: GatedEmbedder) -> AsyncIterator[EmbeddingService]:
    embeddings = EmbeddingService(lambda: gated, TaskTracker())
    embeddings.start()
    assert await embeddings.wait_ready(WAIT)
    yield embeddings
    gated.gate.set()
    await embeddings.close()


async def test_a_request_reaches_the_thread_without_waiting_for_another_loop_turn(
    service: EmbeddingService, gated: GatedEmbedder
) -> None:
    # One loop turn lets the caller start; the loop is then blocked on
    # purpose, so only a batch handed over in that same turn can be running.
    caller = asyncio.ensure_future(service.encode(["what is my job?"]))
    await asyncio.sleep(0)
    assert gated.started.wait(WAIT), "the text was not handed to the embedding thread at once"
    assert np.array_equal(await caller, [one_hot("what is my job?")])


async def test_requests_that_arrive_while_a_batch_runs_share_the_next_batch(
    service: EmbeddingService, gated: GatedEmbedder
) -> None:
    gated.gate.clear()
    first = asyncio.ensure_future(service.encode(["a"]))
    await asyncio.to_thread(gated.started.wait, WAIT)
    waiting = [asyncio.ensure_future(service.encode(texts)) for texts in (["bb", "ccc"], ["dddd"], ["eeeee"])]
    await asyncio.sleep(0)  # all three queued behind the running batch
    gated.gate.set()
    results = await asyncio.gather(first, *waiting)
    assert gated.calls == [["a"], ["bb", "ccc", "dddd", "eeeee"]]
    assert [r.tolist() for r in results] == [
        [one_hot("a").tolist()],
        [one_hot("bb").tolist(), one_hot("ccc").tolist()],
        [one_hot("dddd").tolist()],
        [one_hot("eeeee").tolist()],
    ]


async def test_a_failed_batch_fails_only_its_callers_and_the_queue_goes_on(
    service: EmbeddingService, gated: GatedEmbedder
) -> None:
    gated.gate.clear()
    doomed = asyncio.ensure_future(service.encode(["boom"]))
    await asyncio.to_thread(gated.started.wait, WAIT)
    later = asyncio.ensure_future(service.encode(["fine"]))
    await asyncio.sleep(0)
    gated.gate.set()
    with pytest.raises(RuntimeError, match="failed on this batch"):
        await doomed
    assert np.array_equal(await later, [one_hot("fine")])
    # And the service still takes new work after the failure.
    assert np.array_equal(await service.encode(["again"]), [one_hot("again")])


async def test_a_caller_that_gives_up_does_not_disturb_the_others_in_its_batch(
    service: EmbeddingService, gated: GatedEmbedder
) -> None:
    gated.gate.clear()
    running = asyncio.ensure_future(service.encode(["x"]))
    await asyncio.to_thread(gated.started.wait, WAIT)
    impatient = asyncio.ensure_future(service.encode(["yy"]))
    patient = asyncio.ensure_future(service.encode(["zzz"]))
    await asyncio.sleep(0)
    impatient.cancel()
    gated.gate.set()
    assert np.array_equal(await running, [one_hot("x")])
    assert np.array_equal(await patient, [one_hot("zzz")])
    assert impatient.cancelled()


async def test_a_prefetched_text_is_encoded_once_and_its_encode_one_takes_that_result(
    service: EmbeddingService, gated: GatedEmbedder
) -> None:
    gated.gate.clear()
    service.prefetch("where do I work?")
    assert await asyncio.to_thread(gated.started.wait, WAIT), "the prefetch did not start at once"
    waiting = asyncio.ensure_future(service.encode_one("where do I work?"))
    await asyncio.sleep(0.01)
    gated.gate.set()
    assert np.array_equal(await waiting, one_hot("where do I work?"))
    assert gated.calls == [["where do I work?"]]
    # Claimed once: the same text later is encoded again.
    assert np.array_equal(await service.encode_one("where do I work?"), one_hot("where do I work?"))
    assert len(gated.calls) == 2


async def test_unclaimed_prefetches_are_bounded_and_a_failed_one_stays_quiet(
    service: EmbeddingService, gated: GatedEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.memory.embedder import MAX_EARLY

    service.prefetch("boom")  # fails on the thread; nobody ever claims it
    for i in range(MAX_EARLY + 5):
        service.prefetch(f"text {i}")
    assert np.array_equal(await service.encode_one("other"), one_hot("other"))
    assert len(service._early) == MAX_EARLY
    assert "never retrieved" not in caplog.text


async def test_prefetch_before_the_model_is_ready_does_nothing() -> None:
    gated = GatedEmbedder()
    embeddings = EmbeddingService(lambda: gated, TaskTracker())
    embeddings.prefetch("too early")  # not started: no model, no error
    embeddings.start()
    assert await embeddings.wait_ready(WAIT)
    assert gated.calls == []
    await embeddings.close()
