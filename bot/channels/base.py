"""The Channel seam: what the core needs from any way of reaching users
(Telegram, the terminal console, later the HTTP API). ``Arium`` holds a list
of channels built in bot/app.py and drives them only through this class;
nothing outside a channel's package knows the channel's library."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.conversation import ReplySink


@dataclass(frozen=True)
class Capabilities:
    """What a channel can show, so the core can choose how to answer."""

    streaming: bool = False  # partial answers while the model writes
    buttons: bool = False  # inline buttons under a message
    files: bool = False  # documents in and out
    markup: bool = False  # Telegram-style HTML in messages


class Channel(ABC):
    """One way in and out. The lifecycle is ``start`` (connect: able to
    deliver), ``start_receiving`` (take messages, once the core's services
    run), ``stop`` (take no more, let the turns in flight finish) and
    ``close`` (release connections, after the core's background work has
    drained: that work may still deliver through the channel)."""

    name: str
    capabilities: Capabilities

    @abstractmethod
    async def start(self) -> None: ...

    async def start_receiving(self) -> None:
        """Begin taking messages; a channel that takes them from ``start`` on
        has nothing to do here."""

    @abstractmethod
    async def stop(self, timeout: float) -> None:
        """Stop taking messages; wait up to ``timeout`` for turns in flight."""

    async def close(self) -> None:
        """Release what ``start`` opened."""

    @abstractmethod
    async def deliver(self, address: int, text: str) -> None:
        """Send ``text`` to a chat of this channel (alerts, service messages).
        Never raises for a failed send: the channel logs it."""

    def sink_for(self, chat_id: int, chat_type: str, *, shown: Sequence[int] = ()) -> ReplySink | None:
        """Where an answer to one of this channel's chats goes when no
        message of theirs is being answered (a turn finished after a
        restart); None when the channel cannot send on its own. ``shown``:
        the channel's messages that already show part of that answer (a
        group's live preview when the crash came), to be replaced by it."""
        return None

    def owns(self, address: int) -> bool:
        """Whether ``address`` (a chat id) is one of this channel's chats."""
        return True
