"""The model service the conversation talks to: builds one Provider per
endpoint and the fallback chain over them, from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence

from bot.errors import ConfigError
from bot.llm.base import Provider
from bot.llm.breaker import CircuitBreaker
from bot.llm.cache import ResponseCache
from bot.llm.chain import ChainObserver, ChainPolicy, Endpoint, FallbackChain, Tier
from bot.llm.types import ChatRequest, Completion, StreamEvent
from bot.settings import EndpointSettings, Settings


def build_provider(endpoint: EndpointSettings, settings: Settings) -> Provider:
    key = settings.endpoint_key(endpoint)
    url = settings.endpoint_url(endpoint)
    timeout = settings.bot_model_timeout
    connections = settings.bot_max_concurrent_updates
    if endpoint.provider == "mistral":
        from bot.llm.mistral_provider import MistralProvider

        if not key:
            raise ConfigError(f"the chain uses mistral:{endpoint.model} but MISTRAL_API_KEY is not set")
        return MistralProvider(
            endpoint.model,
            api_key=key,
            server_url=url,
            timeout=timeout,
            connect_timeout=settings.bot_connect_timeout,
            max_connections=connections,
        )
    from bot.llm.openai_provider import OpenAIProvider

    return OpenAIProvider(
        endpoint.model,
        api_key=key,
        base_url=url,
        timeout=timeout,
        connect_timeout=settings.bot_connect_timeout,
        max_connections=connections,
    )


def policy_from(settings: Settings) -> ChainPolicy:
    return ChainPolicy(
        max_attempts=settings.bot_retry_attempts,
        retry_budget=settings.bot_retry_budget,
        retry_after_cap=settings.bot_retry_after_cap,
        first_token_timeout=settings.bot_first_token_timeout,
        idle_timeout=settings.bot_idle_timeout,
        total_timeout=settings.bot_model_timeout,
    )


def chain_from(settings: Settings) -> FallbackChain:
    tiers = []
    for index, tier in enumerate(settings.tiers()):
        name = tier.name or f"tier{index + 1}"
        endpoints = [
            Endpoint(
                build_provider(endpoint, settings),
                CircuitBreaker(
                    failure_threshold=settings.bot_breaker_failures,
                    window=settings.bot_breaker_window,
                    cooldown=settings.bot_breaker_cooldown,
                    hard_cooldown=settings.bot_breaker_auth_cooldown,
                ),
                tier=name,
                weight=endpoint.weight,
                vision=settings.sees_images(endpoint),
            )
            for endpoint in tier.endpoints
        ]
        tiers.append(Tier(name, endpoints, tier.context_window))
    cache = ResponseCache(settings.bot_cache_size, settings.bot_cache_ttl) if settings.bot_cache_size else None
    return FallbackChain(tiers, policy_from(settings), cache=cache, cache_chat=settings.bot_cache_chat)


class ModelService:
    """What the rest of the bot sees of the models: stream, complete, health."""

    def __init__(self, chain: FallbackChain) -> None:
        self.chain = chain

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelService:
        return cls(chain_from(settings))

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self.chain.stream(request)

    async def complete(self, request: ChatRequest, *, cache: bool = False) -> Completion:
        return await self.chain.complete(request, cache=cache)

    def can_see(self) -> bool:
        """An enabled endpoint takes images: a photo can be answered."""
        return self.chain.can_see()

    def observe(self, observer: ChainObserver) -> None:
        self.chain.set_observer(observer)

    def health(self) -> list[dict[str, object]]:
        return self.chain.snapshot()

    # Run-time layout of the chain (/models) -----------------------------------

    def tiers(self) -> list[Tier]:
        """Every configured tier, in the current order (disabled ones included)."""
        return list(self.chain.tiers)

    def disabled_tiers(self) -> frozenset[str]:
        """Keys of the tiers new requests skip."""
        return self.chain.disabled

    def arrange_tiers(self, order: Sequence[str], disabled: Collection[str] = ()) -> None:
        """Reorder and disable tiers by key for new requests (see FallbackChain.arrange)."""
        self.chain.arrange(order, disabled)

    async def aclose(self) -> None:
        for endpoint in self.chain.endpoints:
            await endpoint.provider.aclose()
