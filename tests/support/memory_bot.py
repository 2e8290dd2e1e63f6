"""The whole bot with memory on, against the fake model server: a fake
model (Brain) that tells the bot's request kinds apart by the prompts'
opening lines and answers each its own way, and waiting for the memory
work a turn starts (extraction, summaries, index saves) to finish."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.app import Arium
from tests.conftest import eventually
from tests.fakes.model_server import FakeModelServer, Reply, Request, Step

# Ann is the user the fake Telegram writes as by default (its default chat is
# her private chat, which has her id); Bob is a second user.
ANN, BOB = 1001, 1002


def kind_of(request: Request) -> str:
    first = str(request.messages[0].get("content", "")) if request.messages else ""
    if first.startswith("You keep the long-term memory") and "The exchange:" in first:
        return "extract"
    if first.startswith("You keep the long-term memory"):
        return "update"
    if first.startswith("You keep the running summary"):
        return "summary"
    return "chat"


def requests_of(model: FakeModelServer, kind: str) -> list[Request]:
    return [r for r in model.chat_requests() if kind_of(r) == kind]


def facts(*items: str | dict[str, Any]) -> Reply:
    listed = [{"text": i, "kind": "fact", "importance": 3} if isinstance(i, str) else i for i in items]
    return Reply(text=json.dumps({"facts": listed}))


class Brain:
    """The fake model's behaviour per request kind; chat echoes by default."""

    def __init__(self) -> None:
        self.extract: Callable[[Request], Step] = lambda r: facts()
        self.update: Callable[[Request], Step] = lambda r: Reply(text='{"decisions": []}')
        self.summary: Callable[[Request], Step] = lambda r: Reply(text="They talked about trips.")
        self.chat: Callable[[Request], Step] = lambda r: Reply(text=f"echo: {r.last_user_text}")

    def __call__(self, request: Request) -> Step:
        return getattr(self, kind_of(request))(request)


# Background work a turn starts for memory; other features keep long-lived tasks.
MEMORY_WORK = ("memory-", "embedder-", "summary:")


async def settle(app: Arium, model: FakeModelServer, requests: int) -> None:
    """The model has seen ``requests`` requests and the memory work they
    started (extraction, summaries, index saves) has finished."""
    await model.wait_requests(requests)

    async def busy() -> int:
        tracked = app.tasks._tasks  # noqa: SLF001 - the tracker lists no names
        return sum(1 for task in tracked if task.get_name().startswith(MEMORY_WORK))

    await eventually(busy, lambda n: n == 0)
