"""The bot's HTTP API, reached from outside as a client would: an API key
made for a user, a client for the bot's server (the `openai` SDK for the
OpenAI-compatible part, httpx for the rest), and the error body every
failure answers with. ANN and BOB are the API tests' users."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from bot.app import Arium
from bot.storage.repositories import UserProfile

ANN, BOB = 2001, 2002


async def key_for(app: Arium, user_id: int, name: str) -> str:
    if await app.users.get(user_id) is None:
        await app.users.touch(UserProfile(user_id, f"User{user_id}"), "user")
    _, key = await app.api_keys.create(name, user_id)
    return key


class Api:
    def __init__(self, app: Arium) -> None:
        assert app.api is not None
        self.root = f"http://127.0.0.1:{app.api.port}"

    def sdk(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.root}/v1", api_key=key, max_retries=0)

    async def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=self.root, timeout=30) as client:
            return await client.request(method, path, headers=headers | kwargs.pop("headers", {}), **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]
