"""The thinnest bot that could do Arium's job, for side-by-side runs (P1, P2).

python-telegram-bot with ``concurrent_updates``, the same model SDK as the
bot under test, each chat's history in a dict, one model call per message,
the answer split at 4096 characters. No database, memory, gates, streaming,
commands or error handling: what is left is the floor every feature is
measured against (DESIGN.md section 6).

It is given what any bot serving hundreds of chats at once needs, and no
more: connection pools as large as the concurrency (PTB's and the SDKs'
defaults would queue the chats behind a few connections, which measures the
pool, not the bot), and the same history window Arium sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

SYSTEM_PROMPT = "You are a helpful assistant."
TELEGRAM_LIMIT = 4096
CONCURRENCY = 256
Complete = Callable[[list[dict[str, str]]], Awaitable[str]]


@dataclass
class ThinnestBot:
    token: str
    api_url: str  # Bot API root, as TELEGRAM_API_URL
    provider: str  # openai | mistral
    model: str
    api_key: str
    base_url: str  # OPENAI_BASE_URL or MISTRAL_BASE_URL
    history_window: int = 60  # past messages sent with each request (P1 seeds ~60 per Arium request)
    history: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    application: Application | None = None  # type: ignore[type-arg]
    _complete: Complete | None = None
    _http: httpx2.AsyncClient | None = None

    async def start(self) -> None:
        self._complete = self._model_call()
        self.application = (
            ApplicationBuilder()
            .token(self.token)
            .base_url(f"{self.api_url}/bot")
            .base_file_url(f"{self.api_url}/file/bot")
            .concurrent_updates(CONCURRENCY)
            .connection_pool_size(CONCURRENCY)
            .pool_timeout(30.0)
            .build()
        )
        self.application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._on_text))
        await self.application.initialize()
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(timeout=1, poll_interval=0.0)

    async def stop(self) -> None:
        if self.application is not None:
            assert self.application.updater is not None
            await self.application.updater.stop()
            await self.application.stop()
            await self.application.shutdown()
        if self._http is not None:
            await self._http.aclose()

    @property
    def update_processor(self) -> Any:
        assert self.application is not None
        return self.application.update_processor

    def seed_history(self, chat_id: int, messages: list[dict[str, str]]) -> None:
        self.history.setdefault(chat_id, []).extend(messages)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.message is not None and self._complete is not None
        chat_id = update.effective_chat.id
        history = self.history.setdefault(chat_id, [])
        history.append({"role": "user", "content": update.message.text or ""})
        answer = await self._complete([{"role": "system", "content": SYSTEM_PROMPT}, *history[-self.history_window :]])
        history.append({"role": "assistant", "content": answer})
        for start in range(0, max(len(answer), 1), TELEGRAM_LIMIT):
            await context.bot.send_message(chat_id, answer[start : start + TELEGRAM_LIMIT] or "…")

    def _model_call(self) -> Complete:
        # The SDKs' own HTTP client (httpx2), sized like the concurrency.
        self._http = httpx2.AsyncClient(
            timeout=60.0, limits=httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        )
        if self.provider == "openai":
            from openai import AsyncOpenAI

            openai_client = AsyncOpenAI(
                api_key=self.api_key, base_url=self.base_url, max_retries=0, http_client=self._http
            )

            async def openai_complete(messages: list[dict[str, str]]) -> str:
                answer = await openai_client.chat.completions.create(model=self.model, messages=messages)  # type: ignore[arg-type]
                return answer.choices[0].message.content or ""

            return openai_complete

        from mistralai.client import Mistral

        mistral_client = Mistral(api_key=self.api_key, server_url=self.base_url, async_client=self._http)

        async def mistral_complete(messages: list[dict[str, str]]) -> str:
            answer = await mistral_client.chat.complete_async(model=self.model, messages=messages)  # type: ignore[arg-type]
            content = answer.choices[0].message.content if answer.choices else ""
            return content if isinstance(content, str) else ""

        return mistral_complete
