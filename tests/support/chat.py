"""Chats with the real bot through the fake Telegram, and what the fake
model server was sent in them: the chats the end-to-end tests talk in, the
user's last message as the model got it, and the tool results a request
carried back to the model."""

from __future__ import annotations

from tests.fakes.model_server import FakeModelServer, Request

PRIVATE = 1001  # the fake Telegram's default chat: a user's private chat with the bot
GROUP = -100777


def last_user_text(model: FakeModelServer, index: int = -1) -> str:
    return str(model.chat_requests()[index].body["messages"][-1]["content"])


def system_prompt(request: Request) -> str:
    """The system prompt a model request carried (it always goes first)."""
    return str(request.messages[0]["content"])


def tool_results(model: FakeModelServer, index: int = -1) -> list[str]:
    return [str(m["content"]) for m in model.chat_requests()[index].messages if m.get("role") == "tool"]
