"""Who is who across channels, and where each channel's chats live.

A person may reach Arium through Telegram, the console and the HTTP API.
Each channel names them its own way (an *identity*: the channel and their id
there); identities point at one Arium user, whose memories and reminders
are shared by all of them. /link joins the users of two channels.

Chat ids: a Telegram chat keeps Telegram's id (so every row written before
channels existed stays valid). Console and API chats get ids from ranges
Telegram never hands out (its ids have at most 52 significant bits), derived
from the user, so no lookup or allocation is needed to name one."""

from __future__ import annotations

TELEGRAM = "telegram"
CONSOLE = "console"
API = "api"

# Telegram's ids stay within +-2**52; each local channel owns a range below -2**60.
USER_ID_LIMIT = 2**52
_LOCAL_BASE = {API: -(2**61), CONSOLE: -(2**62)}


def channel_of(chat_type: str) -> str:
    """The channel a chat of this type (a ChatType value) belongs to."""
    return chat_type if chat_type in (CONSOLE, API) else TELEGRAM


def identity_channel(chat_type: str) -> str | None:
    """Whose id a message's profile carries: a person's id in Telegram or
    the console (an identity), or, for the API, whose key already named the
    user (None)."""
    channel = channel_of(chat_type)
    return None if channel == API else channel


def local_chat_id(channel: str, user_id: int) -> int:
    """The chat of ``user_id`` in the console or the API: one per user and
    channel, never equal to a Telegram chat id."""
    if not -USER_ID_LIMIT < user_id < USER_ID_LIMIT:
        raise ValueError(f"user id {user_id} is outside the range of Telegram's ids")
    return _LOCAL_BASE[channel] - abs(user_id) * 2 - (user_id < 0)


def channel_of_chat(chat_id: int) -> str:
    """The channel that owns a chat id (the inverse of local_chat_id's ranges)."""
    if chat_id > -(2**60):
        return TELEGRAM
    return API if chat_id > _LOCAL_BASE[CONSOLE] else CONSOLE
