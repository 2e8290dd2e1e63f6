"""SQL for a user's own data outside memory: their profile, the chat history
they took part in, their reminders and the record of their tool calls, read
for /export and erased for /deleteme."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.identity import API, CONSOLE, local_chat_id
from bot.storage.db import Database
from bot.storage.models import (
    AgentPlan, AgentTurn, Chat, ChatAgent, Conversation, Identity, Message, Reminder, ToolEvent, ToolRound, User,
)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class UserDataRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def profile(self, user_id: int) -> dict[str, Any] | None:
        async with self._db.reading() as s:
            user = await s.get(User, user_id)
            if user is None:
                return None
            identities = await s.execute(
                select(Identity.channel, Identity.external_id).where(Identity.user_id == user_id).order_by(Identity.id)
            )
            return {
                "id": user.id,
                "first_name": user.first_name,
                "last_name": user.last_name,
                "username": user.username,
                "language": user.language,
                "timezone": user.timezone,
                "role": user.role,
                "created_at": _iso(user.created_at),
                "last_seen_at": _iso(user.last_seen_at),
                # Who they are in each channel (joined by /link).
                "identities": [{"channel": channel, "id": external} for channel, external in identities],
            }

    async def delete_profile(self, user_id: int) -> int:
        async with self._db.session() as s:
            result = await s.execute(delete(User).where(User.id == user_id))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def history(self, user_id: int) -> dict[str, Any]:
        """Messages the user wrote or that answered them, and the summaries of
        their private chats (Telegram's, whose id is their user id, and their
        console and API chats)."""
        async with self._db.reading() as s:
            private = await _private_chats(s, user_id)
            rows = (
                await s.execute(
                    select(Message).where(_theirs(user_id, private)).order_by(Message.chat_id, Message.id)
                )
            ).scalars()
            messages = [
                {
                    "chat_id": m.chat_id,
                    "conversation_id": m.conversation_id,
                    "role": m.role,
                    "text": m.content,
                    "status": m.status,
                    "model": m.model,
                    "created_at": _iso(m.created_at),
                }
                for m in rows
            ]
            summaries = [
                {"conversation_id": c.id, "started_at": _iso(c.started_at), "summary": c.summary}
                for c in (
                    await s.execute(
                        select(Conversation)
                        .where(Conversation.chat_id.in_(private), Conversation.summary.is_not(None))
                        .order_by(Conversation.id)
                    )
                ).scalars()
            ]
            return {"messages": messages, "conversation_summaries": summaries}

    async def delete_history(self, user_id: int) -> int:
        async with self._db.session() as s:
            private = await _private_chats(s, user_id)
            # Group summaries may retell what they wrote: those go too.
            spoke_in = select(Message.conversation_id).where(Message.user_id == user_id).distinct()
            await s.execute(
                update(Conversation)
                .where(Conversation.id.in_(spoke_in), Conversation.chat_id.not_in(private))
                .values(summary=None)
            )
            result = await s.execute(delete(Message).where(_theirs(user_id, private)))
            await s.execute(delete(Chat).where(Chat.id.in_(private)))  # conversations cascade
            await s.execute(delete(Conversation).where(Conversation.chat_id.in_(private)))
            # Operational records of their tool calls (not exported: no content of theirs),
            # and the tool rounds of a turn of theirs that never finished.
            await s.execute(delete(ToolEvent).where(ToolEvent.user_id == user_id))
            await s.execute(delete(ToolRound).where(ToolRound.user_id == user_id))
            # Which agent answered them, the plans made for them, their private chats' pinned agent.
            await s.execute(delete(AgentTurn).where(AgentTurn.user_id == user_id))
            await s.execute(delete(AgentPlan).where(AgentPlan.user_id == user_id))
            await s.execute(delete(ChatAgent).where(ChatAgent.chat_id.in_(private)))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def reminders(self, user_id: int) -> list[dict[str, Any]]:
        """Every reminder of the user, whatever its status."""
        async with self._db.reading() as s:
            rows = (
                await s.execute(select(Reminder).where(Reminder.user_id == user_id).order_by(Reminder.id))
            ).scalars()
            return [
                {
                    "id": r.id,
                    "chat_id": r.chat_id,
                    "text": r.text,
                    "timezone": r.timezone,
                    "repeats": r.rule,
                    "status": r.status,
                    "next_fire_at": _iso(r.next_fire_at),
                    "times_fired": r.fire_count,
                    "last_fired_at": _iso(r.last_fired_at),
                    "created_at": _iso(r.created_at),
                }
                for r in rows
            ]

    async def delete_reminders(self, user_id: int) -> int:
        """Timers already armed for them find nothing to claim and stay silent."""
        async with self._db.session() as s:
            result = await s.execute(delete(Reminder).where(Reminder.user_id == user_id))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _theirs(user_id: int, private_chats: list[int]) -> Any:
    return or_(Message.user_id == user_id, Message.chat_id.in_(private_chats))


async def _private_chats(s: AsyncSession, user_id: int) -> list[int]:
    """The chats only this user talks in: their Telegram private chat (its
    id is their user id), their API chat, and the chat of each console that
    is theirs (bot/identity.py)."""
    consoles = await s.execute(
        select(Identity.external_id).where(Identity.user_id == user_id, Identity.channel == CONSOLE)
    )
    chats = [user_id, local_chat_id(API, user_id)]
    chats += [local_chat_id(CONSOLE, int(external)) for external in consoles.scalars() if external.lstrip("-").isdigit()]
    return chats
