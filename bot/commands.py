"""The commands every channel offers, written once: their names and order,
their one-line descriptions, /help, /start and /new. A channel only renders
what these return (Telegram as HTML, the console as plain text)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import bot.link_strings  # noqa: F401  (the /link line of /help)
from bot.context import RequestContext
from bot.conversation import Conversation
from bot.i18n import plain, t

# Commands shown in a channel's menu and in /help, in this order; each has an
# i18n key "cmd_<name>" with its one-line description.
MENU_COMMANDS: tuple[str, ...] = (
    "start", "help", "new", "remind", "reminders", "timezone", "memory", "forget", "export", "deleteme", "link",
)


def command_line(name: str, language: str, *, markup: bool = True) -> str:
    """``/name — description``; HTML-escaped for channels that render markup
    (a description may contain "<": "/forget <words>")."""
    description = t(f"cmd_{name}", language)
    return f"/{name} — {html.escape(description, quote=False) if markup else description}"


def help_text(
    language: str, admin_commands: Sequence[str] = (), *, markup: bool = True, extra: Sequence[str] = ()
) -> str:
    """The user commands; for an admin, the admin commands after them. With
    ``markup`` the text is Telegram HTML, else plain. ``extra``: user commands
    of a feature that is configured (/agent), listed after MENU_COMMANDS."""
    header, admin_header = t("help_header", language), t("help_admin_header", language)
    if not markup:
        header, admin_header = plain(header), plain(admin_header)
    lines = [header, ""]
    lines += [command_line(name, language, markup=markup) for name in (*MENU_COMMANDS, *extra)]
    if admin_commands:
        lines += ["", admin_header, ""]
        lines += [command_line(name, language, markup=markup) for name in admin_commands]
    return "\n".join(lines)


def start_text(ctx: RequestContext, bot_name: str) -> str:
    return t("start", ctx.language, name=ctx.user_name, bot=bot_name)


def unknown_command_text(ctx: RequestContext, command: str) -> str:
    return t("unknown_command", ctx.language, command=command)


async def new_conversation(conversation: Conversation, ctx: RequestContext, chat_title: str | None = None) -> str:
    """/new: the next message starts a fresh conversation; returns the confirmation."""
    await conversation.new_conversation(ctx, chat_title)
    return t("new_conversation", ctx.language)

