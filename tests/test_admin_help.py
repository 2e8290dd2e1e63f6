"""Admins see the admin commands in /help and in their own command menu;
nobody else does."""

from __future__ import annotations

import json

from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram

ADMIN = 4242
USER = 5151
ADMIN_COMMANDS = {
    "allow", "disallow", "invite", "ban", "unban", "budget", "audit", "stats", "users", "health",
    "models", "prompts", "reload", "tools", "backup", "broadcast", "apikey", "eval", "agents",
}


def listed(text: str) -> set[str]:
    return {line.split(" — ")[0].lstrip("/") for line in text.splitlines() if line.startswith("/")}


async def test_help_lists_admin_commands_only_to_admins_in_private(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    assert set(app.telegram.admin_commands) == ADMIN_COMMANDS
    tg.user_text("/help", chat_id=ADMIN, language_code="ru")
    tg.user_text("/help", chat_id=USER)
    tg.user_text("/help", chat_id=-100555, user_id=ADMIN, chat_type="group")
    [admin_help] = await tg.wait_messages(ADMIN, 1)
    [user_help] = await tg.wait_messages(USER, 1)
    [group_help] = await tg.wait_messages(-100555, 1)
    assert ADMIN_COMMANDS <= listed(admin_help.text) and "Команды администратора" in admin_help.text
    assert "new" in listed(user_help.text) and not listed(user_help.text) & ADMIN_COMMANDS
    assert not listed(group_help.text) & ADMIN_COMMANDS, "a group would see the admin's list"
    assert len(admin_help.text) < 4096


async def test_the_admin_menu_is_scoped_to_the_admins_chat(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(bot_admin_ids=str(ADMIN))
    menus: dict[tuple[str, str | None], set[str]] = {}
    for call in tg.calls_of("setMyCommands"):
        scope = call.params.get("scope")
        scope = json.loads(scope) if isinstance(scope, str) else scope
        key = (json.dumps(scope, sort_keys=True) if scope else "default", call.params.get("language_code"))
        commands = call.params["commands"]
        commands = json.loads(commands) if isinstance(commands, str) else commands
        menus[key] = {c["command"] for c in commands}
    admin_scope = json.dumps({"chat_id": ADMIN, "type": "chat"}, sort_keys=True)
    for language in (None, "ru"):
        assert not menus[("default", language)] & ADMIN_COMMANDS
        assert ADMIN_COMMANDS | {"new", "help"} <= menus[(admin_scope, language)]


async def test_an_edited_admin_command_is_not_a_second_order(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    update = tg.user_text("/ban 777", chat_id=ADMIN)
    [banned] = await tg.wait_messages(ADMIN, 1)
    tg.edited_text(update["message"]["message_id"], "/unban 777", chat_id=ADMIN)
    tg.user_text("/audit", chat_id=ADMIN)  # answered after the edit was handled (one chat, in order)
    [_, audit] = await tg.wait_messages(ADMIN, 2)
    assert "777" in banned.text and "unban" not in audit.text
    stored = await app.users.get(777)
    assert stored is not None and stored.role == "banned"
