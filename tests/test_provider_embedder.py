"""EMBEDDING_MODEL=openai:<model> / mistral:<model>: embeddings from the
provider through the real SDKs, against the fake model server's
/v1/embeddings; batching, the query cache, failures falling back to keyword
recall, and the bot using it end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bot.app import Arium
from bot.errors import EmbedderUnavailable
from bot.memory.embedder import EmbedderState
from bot.memory.provider_embedder import BATCH, ProviderEmbedder, ProviderEndpoint, provider_spec
from bot.storage.repositories import UserProfile
from bot.memory.records import NewMemory
from tests.conftest import fake_settings
from tests.fakes.model_server import EMBEDDING_DIM, FakeModelServer, hashed_words
from tests.fakes.telegram_server import FakeTelegram

ANN = 1001


def endpoint(model: FakeModelServer, provider: str, key: str = "test-key") -> ProviderEndpoint:
    url = model.openai_base_url if provider == "openai" else model.mistral_server_url
    return ProviderEndpoint(provider, "fake-embed", key, url)


def test_only_provider_prefixes_name_a_provider() -> None:
    assert provider_spec("openai:text-embedding-3-small") == ("openai", "text-embedding-3-small")
    assert provider_spec("mistral:mistral-embed") == ("mistral", "mistral-embed")
    for local in (None, "", "sentence-transformers/all-MiniLM-L6-v2", "/models/e5", "openai:", "ollama:x"):
        assert provider_spec(local) is None


@pytest.mark.parametrize("provider", ["openai", "mistral"])
async def test_vectors_come_from_the_provider_in_batches_and_queries_are_cached(
    model: FakeModelServer, provider: str
) -> None:
    embedder = await _in_thread(ProviderEmbedder, endpoint(model, provider))
    assert (embedder.name, embedder.dim) == (f"{provider}:fake-embed", EMBEDDING_DIM)
    texts = [f"fact number {i}" for i in range(BATCH + 10)] + ["Сестра живёт в Казани", ""]
    before = len(model.embedding_requests())
    vectors = await _in_thread(embedder.encode, texts)
    assert len(model.embedding_requests()) - before == math.ceil(len(texts) / BATCH)
    expected = np.asarray(hashed_words("Сестра живёт в Казани"), dtype=np.float32)
    assert np.allclose(vectors[-2], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5), "normalized, the empty text too"
    again = await _in_thread(embedder.encode, ["fact number 3"])
    assert len(model.embedding_requests()) - before == math.ceil(len(texts) / BATCH), "cached"
    assert np.allclose(again[0], vectors[3])
    assert all(r.headers["authorization"] == "Bearer test-key" for r in model.embedding_requests(provider))


async def test_an_outage_raises_embedder_unavailable_and_the_breaker_stops_asking(model: FakeModelServer) -> None:
    embedder = await _in_thread(ProviderEmbedder, endpoint(model, "openai"))
    model.embeddings_failing = 503
    for i in range(3):
        with pytest.raises(EmbedderUnavailable):
            await _in_thread(embedder.encode, [f"question {i}"])
    asked = len(model.embedding_requests())
    with pytest.raises(EmbedderUnavailable, match="not asked again"):
        await _in_thread(embedder.encode, ["one more question"])
    assert len(model.embedding_requests()) == asked, "an open breaker costs no request"


async def test_a_wrong_key_fails_the_load(model: FakeModelServer) -> None:
    with pytest.raises(EmbedderUnavailable):
        await _in_thread(ProviderEmbedder, endpoint(model, "mistral", key="wrong"))


# --- The bot with a provider embedder ------------------------------------------------

CONCEPTS = {"car": 0, "toyota": 0, "vehicle": 0, "corolla": 0, "peanuts": 1, "allergic": 1, "sister": 2}


def concept_vector(text: str) -> list[float]:
    """A provider that knows a Toyota is a vehicle: words of one concept share a dimension."""
    vector = [0.0] * 8
    for word in text.lower().replace("?", " ").split():
        if word in CONCEPTS:
            vector[CONCEPTS[word]] += 1.0
    vector[7] = 0.1  # no text is the zero vector
    return vector


def system_prompt(model: FakeModelServer) -> str:
    return str(model.chat_requests()[-1].messages[0]["content"])


async def test_the_bot_recalls_through_the_provider_and_falls_back_to_keywords(
    tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    model.embedding_function = concept_vector
    app = Arium(fake_settings(tmp_path / "data", tg, model, embedding_model="openai:fake-embed"))
    await app.start()
    try:
        assert await app.memory.embeddings.wait_ready(30)
        assert app.memory.embeddings.name == "openai:fake-embed"
        await app.users.touch(UserProfile(ANN, "Ann"), "user")
        await app.memory.add(ANN, [NewMemory("Drives a blue Toyota Corolla"), NewMemory("Allergic to peanuts")])
        # No word in common with the fact: only the provider's vectors find it.
        tg.user_text("Which vehicle is mine?")
        await tg.wait_messages(ANN, 1)
        assert "- Drives a blue Toyota Corolla" in system_prompt(model)
        assert "peanuts" not in system_prompt(model)

        model.embeddings_failing = 500
        tg.user_text("any snack without peanuts?")
        [_, answer] = await tg.wait_messages(ANN, 2)
        assert answer.text == "echo: any snack without peanuts?"
        assert "- Allergic to peanuts" in system_prompt(model), "keyword recall carries the turn"
        # A fact written during the outage is kept, and embedded once the provider is back.
        await app.memory.add(ANN, [NewMemory("Sister lives in Toronto")])
        model.embeddings_failing = None
        await app.memory.drop_index(ANN)  # the next load re-reads the rows
        tg.user_text("how is my sister?")
        await tg.wait_messages(ANN, 3)
        assert "- Sister lives in Toronto" in system_prompt(model)
        embedded, waiting = await app.memory.repository.indexed_state(ANN, "openai:fake-embed")
        assert len(embedded) == 3 and waiting == []
    finally:
        await app.stop()


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    """The SDKs' synchronous clients run in the embedding thread in the bot; here in a worker thread."""
    import asyncio

    return await asyncio.to_thread(fn, *args)


async def test_a_provider_down_at_start_is_asked_again_later(
    tg: FakeTelegram, model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.memory.embedder.LOAD_RETRY_DELAYS", (0.2,))
    model.embeddings_failing = 503
    app = Arium(fake_settings(tmp_path / "data", tg, model, embedding_model="mistral:fake-embed"))
    await app.start()
    try:
        assert not await app.memory.embeddings.wait_ready(30)
        assert app.memory.embeddings.failed and "fake-embed" in app.memory.embeddings.failed
        assert app.memory.embeddings.state().state == "failed"  # /health: "by words only; ... unavailable"
        tg.user_text("hello while the provider is down")
        [answer] = await tg.wait_messages(ANN, 1)
        assert answer.text == "echo: hello while the provider is down"
        model.embeddings_failing = None
        await tg.wait_for(lambda: app.memory.embeddings.ready)
        assert app.memory.embeddings.failed is None and app.memory.embeddings.name == "mistral:fake-embed"
        assert app.memory.embeddings.state() == EmbedderState("ready", "mistral:fake-embed")
    finally:
        await app.stop()


async def test_doctor_asks_the_embedding_provider(
    tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    from bot.doctor import run_doctor

    lines: list[str] = []
    await run_doctor(fake_settings(tmp_path / "data", tg, model, embedding_model="openai:fake-embed"), lines.append)
    assert f"ok   embedding model: openai:fake-embed answers ({EMBEDDING_DIM} dimensions)" in lines
    model.embeddings_failing = 401
    lines.clear()
    assert await run_doctor(
        fake_settings(tmp_path / "data", tg, model, embedding_model="mistral:fake-embed"), lines.append
    ) == 1
    assert any(line.startswith("FAIL embedding model: mistral:fake-embed") for line in lines), lines
    lines.clear()
    await run_doctor(fake_settings(tmp_path / "data", tg, model, embedding_model=str(tmp_path / "nowhere")), lines.append)
    assert any(line.startswith("FAIL embedding model:") and "not a folder" in line for line in lines), lines
