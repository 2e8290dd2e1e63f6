"""Embeddings from a model provider instead of the local model:
``EMBEDDING_MODEL=openai:<model>`` (OpenAI, or any OpenAI-compatible server at
OPENAI_BASE_URL) or ``mistral:<model>``, through the same SDKs the chat uses.

For people who prefer quality to locality: a provider's multilingual
embedding model recalls paraphrases in Russian that the bundled English model
cannot (bench/recall_quality.py). It runs behind the same ``Embedder`` seam,
in the embedding thread, so it uses the SDKs' synchronous clients:

- writes are batched (EmbeddingService coalesces requests; a call carries at
  most BATCH texts);
- queries are cached (the same text is not sent twice while it is recent);
- a failure raises EmbedderUnavailable, which recall answers with keyword
  search alone and a write answers by storing the row unembedded (embedded
  at the next index load); a breaker stops asking a provider that keeps
  failing for a while, so turns do not each wait for it to time out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.errors import EmbedderUnavailable
from bot.llm.breaker import CircuitBreaker
from bot.memory.embedder import Embedder
from bot.settings import EndpointSettings, Settings

log = logging.getLogger(__name__)

PROVIDERS = ("openai", "mistral")
BATCH = 64  # texts per request
CACHED_TEXTS = 2_048
# The SDK may be slow to say no; a turn waits BOT_MEMORY_RECALL_WAIT at most anyway.
TIMEOUT = 15.0
PROBE = "dimension probe"

Call = Callable[[list[str]], list[list[float]]]


@dataclass(frozen=True)
class ProviderEndpoint:
    provider: str  # openai | mistral
    model: str
    api_key: str | None
    base_url: str | None


def provider_spec(value: str | None) -> tuple[str, str] | None:
    """("openai", "text-embedding-3-small") for "openai:text-embedding-3-small";
    None for a local model name or path."""
    if not value:
        return None
    provider, sep, model = value.partition(":")
    if sep and provider in PROVIDERS and model.strip():
        return provider, model.strip()
    return None


def configured_endpoint(settings: Settings) -> ProviderEndpoint | None:
    """The provider EMBEDDING_MODEL names, with the key and URL the chat's
    endpoints of that provider use; None for a local model."""
    remote = provider_spec(settings.embedding_model)
    if remote is None:
        return None
    provider, model = remote
    endpoint = EndpointSettings(provider=provider, model=model)  # type: ignore[arg-type]
    return ProviderEndpoint(provider, model, settings.endpoint_key(endpoint), settings.endpoint_url(endpoint))


class ProviderEmbedder(Embedder):
    """An embedder backed by a provider. The
    constructor asks for one vector to learn the dimension, so a bad key or
    model fails the load, loudly, instead of every later write."""

    def __init__(self, endpoint: ProviderEndpoint, *, call: Call | None = None) -> None:
        self.name = f"{endpoint.provider}:{endpoint.model}"
        self._call = call or _sdk_call(endpoint)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._breaker = CircuitBreaker(failure_threshold=3, window=60.0, cooldown=30.0, hard_cooldown=300.0)
        self.dim = int(self._request([PROBE]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            for text, vector in zip(chunk, self._request(chunk), strict=True):
                self._remember(text, vector)
        return np.stack([self._cache[text] for text in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def _request(self, texts: list[str]) -> np.ndarray:
        if not self._breaker.allow_request():
            raise EmbedderUnavailable(f"{self.name} failed repeatedly; not asked again for a while")
        try:
            # A provider rejects empty input; an empty text embeds as a single space.
            rows = self._call([text or " " for text in texts])
            matrix = np.asarray(rows, dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape[0] != len(texts) or matrix.shape[1] == 0:
                raise ValueError(f"expected {len(texts)} vectors, got an array of shape {matrix.shape}")
            if getattr(self, "dim", matrix.shape[1]) != matrix.shape[1]:
                raise ValueError(f"vectors of {matrix.shape[1]} dimensions, not {self.dim}")
        except Exception as exc:  # noqa: BLE001 - any SDK or shape failure: recall goes on with keywords
            self._breaker.record_failure(hard=_is_hard(exc))
            log.warning("embedding request to %s failed: %s: %s", self.name, exc.__class__.__name__, exc)
            raise EmbedderUnavailable(f"{self.name}: {exc.__class__.__name__}") from exc
        self._breaker.record_success()
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.ascontiguousarray(matrix / np.clip(norms, 1e-12, None), dtype=np.float32)

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > CACHED_TEXTS:
            self._cache.popitem(last=False)


def _is_hard(exc: Exception) -> bool:
    """A wrong key or an unknown model: asking again soon cannot help."""
    return getattr(exc, "status_code", None) in (401, 403, 404)


def _sdk_call(endpoint: ProviderEndpoint) -> Call:
    if endpoint.provider == "openai":
        from openai import OpenAI

        openai_client = OpenAI(
            api_key=endpoint.api_key or "unset", base_url=endpoint.base_url, max_retries=0, timeout=TIMEOUT
        )

        def openai_call(texts: list[str]) -> list[list[float]]:
            answer = openai_client.embeddings.create(model=endpoint.model, input=texts, encoding_format="float")
            return [item.embedding for item in sorted(answer.data, key=lambda item: item.index)]

        return openai_call

    from mistralai.client import Mistral

    mistral_client = Mistral(api_key=endpoint.api_key or "unset", server_url=endpoint.base_url)

    def mistral_call(texts: list[str]) -> list[list[float]]:
        answer = mistral_client.embeddings.create(model=endpoint.model, inputs=texts, timeout_ms=int(TIMEOUT * 1000))
        return [list(item.embedding or []) for item in sorted(answer.data, key=lambda item: item.index or 0)]

    return mistral_call
