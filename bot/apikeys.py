"""`python -m bot apikey create|list|revoke`: the HTTP API's keys from the
command line. A key is printed once, alone on the last line of stdout."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.auth import AuthProvider
from bot.errors import AriumError, ConfigError
from bot.settings import Settings
from bot.storage.api_keys import ApiKeyNameTaken, ApiKeyRepository
from bot.storage.db import Database
from bot.storage.repositories import UserProfile, UserRepository

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ApiKeyCommandError(AriumError):
    """A bad request of the apikey command; the message says what to change."""


async def run_apikey_command(
    settings: Settings, action: str, *, name: str | None, user_id: int | None, out: Callable[[str], None]
) -> int:
    from bot.app import check_database_url

    check_database_url(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        keys = ApiKeyRepository(db)
        if action == "create":
            await _create(settings, db, keys, name, user_id, out)
        elif action == "list":
            await _list(keys, out)
        else:
            await _revoke(keys, name, out)
    finally:
        await db.dispose()
    return 0


def _checked_name(name: str | None) -> str:
    if not name or not NAME.match(name):
        raise ApiKeyCommandError("give the key a name of 1-64 letters, digits, '.', '_' or '-' (--name NAME)")
    return name


async def _create(
    settings: Settings, db: Database, keys: ApiKeyRepository, name: str | None, user_id: int | None,
    out: Callable[[str], None],
) -> None:
    name = _checked_name(name)
    owner = user_id if user_id is not None else settings.console_user_id()
    if owner < 1:
        raise ConfigError("--user-id must be a positive user id")
    users = UserRepository(db, settings.bot_timezone)
    if await users.get(owner) is None:  # a key for someone who never wrote yet
        role = AuthProvider(settings.bot_admin_ids).effective_role(owner, None).value
        await users.touch(UserProfile(owner, "API user"), role)
    try:
        record, key = await keys.create(name, owner)
    except ApiKeyNameTaken:
        raise ApiKeyCommandError(f"a key named {name!r} exists already; pick another name") from None
    out(f"API key {record.name!r} for user {record.user_id}. It is shown only now; keep it like a password:")
    out(key)


async def _list(keys: ApiKeyRepository, out: Callable[[str], None]) -> None:
    records = await keys.listed()
    if not records:
        out("no API keys yet: python -m bot apikey create --name NAME")
        return
    for record in records:
        state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
        out(f"{record.name}\tuser {record.user_id}\tcreated {record.created_at:%Y-%m-%d %H:%M}\t{state}")


async def _revoke(keys: ApiKeyRepository, name: str | None, out: Callable[[str], None]) -> None:
    name = _checked_name(name)
    if not await keys.revoke(name):
        raise ApiKeyCommandError(f"no active key named {name!r} (python -m bot apikey list shows them)")
    out(f"API key {name!r} revoked; requests with it are refused from now on")
