"""The model service the conversation talks to. Builds one Provider per
BOT_MODELS entry. This first version answers from the first entry only; the
fallback chain (retries, breakers, balancing) replaces `stream` later without
changing its signature."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bot.errors import ConfigError
from bot.llm.base import Provider
from bot.llm.types import ChatRequest, Completion, StreamEvent
from bot.settings import ModelRef, Settings


def build_provider(ref: ModelRef, settings: Settings) -> Provider:
    timeout = settings.bot_model_timeout
    connections = settings.bot_max_concurrent_updates
    if ref.provider == "mistral":
        from bot.llm.mistral_provider import MistralProvider

        if not settings.mistral_api_key:
            raise ConfigError(f"BOT_MODELS uses {ref} but MISTRAL_API_KEY is not set")
        return MistralProvider(
            ref.model,
            api_key=settings.mistral_api_key.get_secret_value(),
            server_url=settings.mistral_base_url,
            timeout=timeout,
            max_connections=connections,
        )
    from bot.llm.openai_provider import OpenAIProvider

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIProvider(
        ref.model,
        api_key=key,
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_connections=connections,
    )


class ModelService:
    def __init__(self, providers: list[Provider]) -> None:
        if not providers:
            raise ConfigError("BOT_MODELS names no model")
        self.providers = providers

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelService:
        return cls([build_provider(ref, settings) for ref in settings.bot_models])

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self.providers[0].stream(request)

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once, for internal calls (memory extraction,
        summaries) that show nothing while the model writes."""
        return await self.providers[0].complete(request)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
