from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.auth import AuthProvider, Role
from bot.context import (
    ChatType,
    ContextMiddleware,
    RequestContext,
    configure_logging,
    current_request_id,
)
from bot.storage.db import Database
from bot.storage.repositories import UserProfile, UserRepository
from tests.support.contexts import context


def test_context_is_validated_normalized_and_serializable() -> None:
    ctx = context()
    assert ctx.language == "ru" and ctx.chat_type is ChatType.PRIVATE and ctx.role is Role.USER
    assert ctx.received_at.tzinfo is not None
    assert RequestContext.model_validate_json(ctx.model_dump_json()) == ctx
    assert context(language="de").language == "en"  # unsupported UI language falls back
    assert ctx.local_now(datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)).hour == 9
    with pytest.raises(ValidationError):
        context(timezone="Mars/Base")
    with pytest.raises(ValidationError):
        context(chat_type="bogus")
    with pytest.raises(ValidationError):
        ctx.__setattr__("user_id", 2)  # frozen


async def test_middleware_resolves_roles_from_config_and_database(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await db.migrate()
    users = UserRepository(db, "Asia/Tokyo")
    middleware = ContextMiddleware(users, AuthProvider(frozenset({42})))
    try:
        admin = await middleware.build(UserProfile(42, "Boss", language="en"), chat_id=42, chat_type="private")
        assert admin.role is Role.ADMIN and admin.timezone == "Asia/Tokyo" and admin.first_contact
        assert current_request_id.get() == admin.request_id
        again = await middleware.build(UserProfile(42, "Boss", language="en"), chat_id=42, chat_type="private")
        assert not again.first_contact
        user = await middleware.build(UserProfile(7, "", username="seven"), chat_id=-5, chat_type="supergroup")
        assert user.role is Role.USER and user.user_name == "@seven" and not user.is_private
        async with db.session() as s:
            from bot.storage.models import User

            (await s.get(User, 7)).role = "banned"  # type: ignore[union-attr]
        banned = await middleware.build(UserProfile(7, "Seven"), chat_id=7, chat_type="private")
        assert banned.role is Role.BANNED
        assert admin.request_id != user.request_id != banned.request_id
    finally:
        await db.dispose()


def test_log_lines_carry_the_request_id_and_never_secrets(tmp_path: Path) -> None:
    token = "987654:SECRET-TOKEN-VALUE"
    log_file = tmp_path / "arium.log"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", [token, "mistral-key-123"], str(log_file))
    try:
        current_request_id.set("req-1")
        logging.getLogger("telegram.ext").warning("POST https://api.telegram.org/bot%s/getUpdates failed", token)
        logging.getLogger("bot.llm").error("bad key mistral-key-123 rejected")
        logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/sendMessage", token)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        current_request_id.set("-")
    output = log_file.read_text()
    assert "SECRET-TOKEN" not in output and "mistral-key-123" not in output
    assert output.count("***") == 2
    assert "[req-1]" in output
    assert "HTTP Request" not in output  # httpx request logs are silenced: they carry the token
