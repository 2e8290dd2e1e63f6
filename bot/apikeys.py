"""The HTTP API's keys, as admins manage them: from the command line
(`python -m bot apikey create|list|revoke`, the key printed once, alone on
the last line of stdout) and with /apikey in Telegram. One implementation;
each front end only words the outcome."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from bot.auth import AuthProvider
from bot.errors import AriumError
from bot.identity import USER_ID_LIMIT
from bot.settings import Settings
from bot.storage.api_keys import ApiKeyNameTaken, ApiKeyRecord, ApiKeyRepository
from bot.storage.db import Database
from bot.storage.repositories import UserProfile, UserRepository

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# What each refusal says on the command line (Telegram words them per language).
MESSAGES = {
    "bad_name": "give the key a name of 1-64 letters, digits, '.', '_' or '-'",
    "bad_user": "the user id must be a positive number below 2**52",
    "taken": "a key named {name!r} exists already; pick another name",
    "not_found": "no active key named {name!r} (apikey list shows them)",
}


class ApiKeyCommandError(AriumError):
    """A request that cannot be done; ``code`` says which, for wording it."""

    def __init__(self, code: str, **values: object) -> None:
        super().__init__(MESSAGES[code].format(**values))
        self.code = code
        self.values = values


def checked_name(name: str | None) -> str:
    if not name or not NAME.match(name):
        raise ApiKeyCommandError("bad_name")
    return name


async def create_key(
    users: UserRepository, keys: ApiKeyRepository, admin_ids: Collection[int], name: str | None, owner: int
) -> tuple[ApiKeyRecord, str]:
    """A new key for ``owner`` (created as a user if they never wrote): the
    record and the key itself, which exists nowhere else."""
    name = checked_name(name)
    if not 1 <= owner < USER_ID_LIMIT:
        raise ApiKeyCommandError("bad_user")
    if await users.get(owner) is None:
        role = AuthProvider(frozenset(admin_ids)).effective_role(owner, None).value
        await users.touch(UserProfile(owner, "API user"), role)
    try:
        return await keys.create(name, owner)
    except ApiKeyNameTaken:
        raise ApiKeyCommandError("taken", name=name) from None


async def revoke_key(keys: ApiKeyRepository, name: str | None) -> str:
    name = checked_name(name)
    if not await keys.revoke(name):
        raise ApiKeyCommandError("not_found", name=name)
    return name


def describe(record: ApiKeyRecord) -> str:
    state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
    return f"{record.name}\tuser {record.user_id}\tcreated {record.created_at:%Y-%m-%d %H:%M}\t{state}"


async def run_apikey_command(
    settings: Settings, action: str, *, name: str | None, user_id: int | None, out: Callable[[str], None]
) -> int:
    from bot.storage.db import check_database_url

    check_database_url(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        keys = ApiKeyRepository(db)
        if action == "create":
            owner = user_id if user_id is not None else settings.console_user_id()
            users = UserRepository(db, settings.bot_timezone)
            record, key = await create_key(users, keys, settings.bot_admin_ids, name, owner)
            out(f"API key {record.name!r} for user {record.user_id}. It is shown only now; keep it like a password:")
            out(key)
        elif action == "list":
            records = await keys.listed()
            for line in [describe(r) for r in records] or ["no API keys yet: python -m bot apikey create --name NAME"]:
                out(line)
        else:
            out(f"API key {await revoke_key(keys, name)!r} revoked; requests with it are refused from now on")
    finally:
        await db.dispose()
    return 0
