"""RequestContexts for code that takes one directly (tools, limits, the
tool loop), called without a chat or a bot around it."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.auth import Role
from bot.context import ChatType, RequestContext


def make_ctx(user_id: int = 7, role: Role = Role.USER, language: str = "en", tz: str = "UTC") -> RequestContext:
    """A private chat's context, built field by field."""
    return RequestContext(
        user_id=user_id,
        chat_id=user_id,
        chat_type=ChatType.PRIVATE,
        role=role,
        language=language,
        timezone=tz,
        user_name="Ann",
        request_id="req123",
        received_at=datetime.now(timezone.utc),
    )


def context(**overrides: object) -> RequestContext:
    """A context validated from plain values (so normalized: "ru-RU" becomes
    "ru"); any field can be overridden."""
    values: dict[str, object] = {
        "user_id": 1,
        "chat_id": 1,
        "chat_type": "private",
        "role": "user",
        "language": "ru-RU",
        "timezone": "Europe/Moscow",
        "user_name": "Ann",
        "request_id": "abc",
        "received_at": datetime(2026, 11, 21, 9, 0),
    }
    values.update(overrides)
    return RequestContext.model_validate(values)
