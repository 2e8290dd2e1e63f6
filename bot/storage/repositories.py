"""Repositories: the only code that writes SQL. Each method is one short
transaction and returns plain dataclasses, never live ORM objects."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, String, and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.identity import TELEGRAM, channel_of_chat
from bot.storage.db import Database, dialect_insert, insert_for
from bot.storage.models import UNFINISHED, Chat, Conversation, Identity, Message, User, table_of
from bot.runtime.clock import utcnow

# How many recent rows a history query reads before applying the token budget;
# a budget of a few thousand tokens never needs more.
HISTORY_ROW_LIMIT = 200


@dataclass(frozen=True)
class UserProfile:
    """What a channel knows about a user when a message arrives."""

    id: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class UserRecord:
    id: int
    first_name: str
    last_name: str | None
    username: str | None
    language: str
    timezone: str
    role: str
    last_seen_at: datetime
    # Admitted in allow-list mode; False once Telegram said the user blocked
    # the bot; the per-user daily token budget (None: the configured default).
    allowed: bool = False
    active: bool = True
    token_budget: int | None = None
    # The call that returned this record created the user (a first contact):
    # nothing about them is stored yet, no memories, no history.
    first_contact: bool = False


@dataclass(frozen=True)
class StoredMessage:
    """A message of a conversation's history, as a turn and the summarizer
    read it. No timestamp: nothing on that path uses one, and parsing 200 of
    them from SQLite's text was half the history read's CPU (0.9 of 1.8 ms)."""

    id: int
    role: str
    content: str
    tokens: int
    status: str
    user_id: int | None


# How stale last_seen_at may get before a message rewrites it: a write per
# message would only say what a write per minute says.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)

# The statements every message runs, built once as Core statements: building
# one cost about as much CPU as running it, and the ORM's unit of work more
# than both ("P2: a turn's SQL" in BENCHMARKS.md).
_USERS = table_of(User)
_IDENTITIES = table_of(Identity)
_USER_RECORD = (
    _USERS.c.id, _USERS.c.first_name, _USERS.c.last_name, _USERS.c.username, _USERS.c.language,
    _USERS.c.timezone, _USERS.c.role, _USERS.c.last_seen_at, _USERS.c.allowed, _USERS.c.active,
    _USERS.c.token_budget,
)
_USER_BY_IDENTITY = (
    select(*_USER_RECORD)
    .join_from(_USERS, _IDENTITIES, _IDENTITIES.c.user_id == _USERS.c.id)
    .where(_IDENTITIES.c.channel == bindparam("channel"), _IDENTITIES.c.external_id == bindparam("external_id"))
)
_USER_BY_ID = select(*_USER_RECORD).where(_USERS.c.id == bindparam("user_id"))
# A message's refresh of its sender: the profile as the channel tells it (an
# empty first name or no language keeps the stored one), seen now, active
# again (writing to the bot undoes "blocked the bot"), and the role, except
# that a ban is kept in the database (only the admin role, which follows
# configuration, replaces it).
_NEW_ROLE = bindparam("new_role", type_=String())
_REFRESH_USER = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("user_id", type_=BigInteger()))
    .values(
        first_name=func.coalesce(bindparam("new_first_name", type_=String()), _USERS.c.first_name),
        last_name=bindparam("new_last_name", type_=String()),
        username=bindparam("new_username", type_=String()),
        language=func.coalesce(bindparam("new_language", type_=String()), _USERS.c.language),
        role=case((and_(_USERS.c.role == "banned", _NEW_ROLE != "admin"), _USERS.c.role), else_=_NEW_ROLE),
        last_seen_at=bindparam("now", type_=_USERS.c.last_seen_at.type),
        active=True,
    )
    .returning(*_USER_RECORD)
)


class UserRepository:
    def __init__(self, db: Database, default_timezone: str) -> None:
        self._db = db
        self._default_timezone = default_timezone
        insert_ = dialect_insert(db.dialect)
        # Two first messages of one user at once must not race.
        self._add_user = insert_(_USERS).on_conflict_do_nothing()
        self._add_identity = insert_(_IDENTITIES).on_conflict_do_nothing()

    async def visit(
        self, profile: UserProfile, decide_role: Callable[[str | None], str], *, channel: str | None = None
    ) -> UserRecord:
        """The user as stored, created on first contact and refreshed when the
        profile, the role or last-seen changed. ``decide_role`` maps the stored
        role (None for a new user) to the effective one. The common case is one
        read and no write.

        With ``channel``, ``profile.id`` is the person's id in that channel
        (an identity), which may belong to a user of another id after /link;
        a first contact records the identity for the user of that id.
        Without it, ``profile.id`` is the user's own id."""
        current = await (self.get(profile.id) if channel is None else self._by_identity(channel, profile.id))
        role = decide_role(current.role if current else None)
        if current is None:
            return await self.touch(profile, role, identity=channel)
        if channel not in (None, TELEGRAM):
            # Names come from Telegram, where people have them; the console
            # and others only say who is there.
            profile = UserProfile(current.id, current.first_name, current.last_name, current.username, profile.language)
        elif current.id != profile.id:
            profile = UserProfile(current.id, profile.first_name, profile.last_name, profile.username, profile.language)
        if _stale(current, profile, role):
            return await self.touch(profile, role)
        return current

    async def _by_identity(self, channel: str, external_id: int) -> UserRecord | None:
        async with self._db.connected() as conn:
            row = (await conn.execute(_USER_BY_IDENTITY, {"channel": channel, "external_id": str(external_id)})).first()
        return _record_of(row) if row else None

    async def touch(self, profile: UserProfile, role: str, *, identity: str | None = None) -> UserRecord:
        """Create the user on first contact, refresh the profile, record the
        role; with ``identity``, also record that channel's identity
        (``profile.id`` there) for the user of the same id."""
        now = utcnow()
        async with self._db.writing() as conn:
            added = await conn.execute(self._add_user, {
                "id": profile.id,
                "first_name": profile.first_name,
                "last_name": profile.last_name,
                "username": profile.username,
                "language": (profile.language or "en")[:16],
                "timezone": self._default_timezone,
                "role": role,
                "created_at": now,
                "last_seen_at": now,
                "allowed": False,
                "active": True,
            })
            if identity is not None:
                await conn.execute(
                    self._add_identity,
                    {"channel": identity, "external_id": str(profile.id), "user_id": profile.id, "created_at": now},
                )
            refreshed = await conn.execute(_REFRESH_USER, {
                "user_id": profile.id,
                "new_first_name": profile.first_name or None,
                "new_last_name": profile.last_name,
                "new_username": profile.username,
                "new_language": profile.language[:16] if profile.language else None,
                "new_role": role,
                "now": now,
            })
            return _record_of(refreshed.one(), first_contact=added.rowcount == 1)

    async def get(self, user_id: int) -> UserRecord | None:
        async with self._db.connected() as conn:
            row = (await conn.execute(_USER_BY_ID, {"user_id": user_id})).first()
        return _record_of(row) if row else None

    async def count(self) -> int:
        async with self._db.reading() as s:
            return int((await s.execute(select(func.count()).select_from(User))).scalar_one())

    async def memory_read_until(self, user_id: int, message_id: int | None = None) -> None:
        """Memory extraction has read the user's messages up to ``message_id``
        (None: all of them so far, after the user deleted memories: what they
        said before must not be extracted again). Never moves back."""
        async with self._db.session() as s:
            if message_id is None:
                message_id = (
                    await s.execute(select(func.max(Message.id)).where(Message.user_id == user_id))
                ).scalar_one()
                if message_id is None:
                    return
            await s.execute(
                update(User)
                .where(User.id == user_id, func.coalesce(User.memory_extracted_until, 0) < message_id)
                .values(memory_extracted_until=message_id)
            )

    async def get_many(self, user_ids: Collection[int]) -> dict[int, UserRecord]:
        if not user_ids:
            return {}
        async with self._db.reading() as s:
            rows = (await s.execute(select(User).where(User.id.in_(set(user_ids))))).scalars().all()
            return {user.id: _record_of(user) for user in rows}

    async def find_by_username(self, username: str) -> UserRecord | None:
        """The user who last had ``username`` (without the @, any case).
        Telegram usernames are unique at any moment but can change hands, so
        of several stored holders the most recently seen one wins."""
        name = username.removeprefix("@").lower()
        if not name:
            return None
        query = (
            select(User)
            .where(func.lower(User.username) == name)
            .order_by(User.last_seen_at.desc(), User.id.desc())
            .limit(1)
        )
        async with self._db.reading() as s:
            user = (await s.execute(query)).scalar_one_or_none()
            return _record_of(user) if user else None

    async def set_role(self, user_id: int, role: str, *, create: bool = False) -> UserRecord | None:
        """Store ``role`` (user / banned); None if the user is unknown and
        ``create`` is False. Takes effect at the user's next message: the
        context middleware reads the stored role every time."""
        return await self._update(user_id, {"role": role}, create=create)

    async def set_allowed(self, user_id: int, allowed: bool, *, create: bool = False) -> UserRecord | None:
        return await self._update(user_id, {"allowed": allowed}, create=create)

    async def set_token_budget(self, user_id: int, budget: int | None) -> UserRecord | None:
        """Per-user daily token budget; None returns the user to the default."""
        return await self._update(user_id, {"token_budget": budget}, create=False)

    async def _update(self, user_id: int, values: dict[str, Any], *, create: bool) -> UserRecord | None:
        async with self._db.session() as s:
            if create:
                # Or nothing, when the user exists (or is being created by their first message).
                await s.execute(insert_for(s)(User).values(**self._placeholder(user_id)).on_conflict_do_nothing())
            user = await s.get(User, user_id)
            if user is None:
                return None
            for name, value in values.items():
                setattr(user, name, value)
            return _record_of(user)

    def _placeholder(self, user_id: int) -> dict[str, Any]:
        """A user an admin named by id before they ever wrote. Inactive: the
        bot may not message someone who has not started it, so broadcasts
        skip them until their first message (which fills in the profile)."""
        now = utcnow()
        return {
            "id": user_id,
            "first_name": "",
            "language": "en",
            "timezone": self._default_timezone,
            "role": "user",
            "created_at": now,
            "last_seen_at": now,
            "allowed": False,
            "active": False,
        }


def _stale(current: UserRecord, profile: UserProfile, role: str) -> bool:
    if utcnow() - current.last_seen_at >= LAST_SEEN_RESOLUTION or not current.active:
        return True
    if current.role != role and not (current.role == "banned" and role != "admin"):
        return True
    language = (profile.language or current.language)[:16]
    return (
        (profile.first_name or current.first_name) != current.first_name
        or profile.username != current.username
        or profile.last_name != current.last_name
        or language != current.language
    )


def _record_of(row: Any, *, first_contact: bool = False) -> UserRecord:
    """A row of ``_USER_RECORD``'s columns, or a ``User``, as a record."""
    return UserRecord(
        id=row.id,
        first_name=row.first_name,
        last_name=row.last_name,
        username=row.username,
        language=row.language,
        timezone=row.timezone,
        role=row.role,
        last_seen_at=row.last_seen_at,
        allowed=bool(row.allowed),
        active=bool(row.active),
        token_budget=row.token_budget,
        first_contact=first_contact,
    )


@dataclass(frozen=True)
class HistoryWindow:
    """What a turn sends of its conversation: the running summary of older
    turns, then the newest messages after it that fit the token budget."""

    history: list[StoredMessage]  # oldest first
    summary: str | None = None
    # Unsummarized messages were left out for the budget: time to fold them.
    overflow: bool = False
    unsummarized_tokens: int = 0


# Statuses of a user message: PENDING while its turn runs, "complete" once
# answered, UNANSWERED when the model failed (the user was told), MISSED when
# a crash lost it and the user got a note; RECOVERING while a restart
# finishes it. History excludes none of them.
PENDING = "pending"
RECOVERING = "recovering"
UNANSWERED = "unanswered"
MISSED = "missed"


@dataclass(frozen=True)
class UnfinishedTurn:
    message_id: int
    conversation_id: int
    chat_id: int
    chat_type: str
    chat_title: str | None
    user_id: int
    content: str  # as stored (in groups: "Name: text")
    created_at: datetime
    request_id: str | None = None  # the original turn's (its tool rounds are kept under it)
    # Telegram messages a group's live preview of the answer occupied when the crash came.
    preview_message_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExtractionBacklog:
    user_id: int
    user_name: str
    exchanges: list[tuple[int, str, str]]  # (question's message id, question, answer), oldest first


@dataclass(frozen=True)
class TurnStart:
    conversation_id: int
    user_message_id: int
    history: list[StoredMessage]  # oldest first, excluding the new user message
    summary: str | None = None
    overflow: bool = False
    unsummarized_tokens: int = 0


_CHATS = table_of(Chat)
_CONVERSATIONS = table_of(Conversation)
_MESSAGES = table_of(Message)
_CHAT_STATE = select(_CHATS.c.active_conversation_id, _CHATS.c.title).where(_CHATS.c.id == bindparam("chat_id"))
_SUMMARY_STATE = select(_CONVERSATIONS.c.summary, _CONVERSATIONS.c.summary_until_id).where(
    _CONVERSATIONS.c.id == bindparam("conversation_id")
)
# Message ids are positive and far below this: "no bound" for the window's id range.
_NO_ID_BOUND = 2**62
# StoredMessage's fields, in order. Plain columns, not ORM objects: a turn
# reads up to 200 rows, and building mapped instances for them was most of
# the query's cost.
_STORED_MESSAGE = (
    _MESSAGES.c.id, _MESSAGES.c.role, _MESSAGES.c.content, _MESSAGES.c.tokens, _MESSAGES.c.status,
    _MESSAGES.c.user_id,
)
# The id range keeps the statement one (cached) shape: after the summary,
# before a given message.
_WINDOW = (
    select(*_STORED_MESSAGE)
    .where(
        _MESSAGES.c.conversation_id == bindparam("conversation_id"),
        _MESSAGES.c.status != "failed",
        _MESSAGES.c.id > bindparam("after_id"),
        _MESSAGES.c.id < bindparam("before_id"),
    )
    .order_by(_MESSAGES.c.id.desc())
    .limit(HISTORY_ROW_LIMIT)
)
_ADD_MESSAGE = insert(_MESSAGES).returning(_MESSAGES.c.id)
_SET_STATUS = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message_id")).values(
    status=bindparam("new_status", type_=String())
)
_OPEN_CONVERSATION = insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id)
_SET_ACTIVE = update(_CHATS).where(_CHATS.c.id == bindparam("chat_id")).values(
    active_conversation_id=bindparam("conversation_id", type_=BigInteger())
)
_RETITLE = update(_CHATS).where(_CHATS.c.id == bindparam("chat_id")).values(title=bindparam("new_title", type_=String()))


class MessageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._add_chat = dialect_insert(db.dialect)(_CHATS).on_conflict_do_nothing()

    async def start_turn(
        self,
        *,
        chat_id: int,
        chat_type: str,
        chat_title: str | None,
        user_id: int,
        text: str,
        tokens: int,
        request_id: str,
        history_tokens: int,
    ) -> TurnStart:
        """Record the user's message and return the history before it. The
        history is read before the write transaction, so the write lock is
        held only for the insert."""
        async with self._db.connected() as conn:
            chat = (await conn.execute(_CHAT_STATE, {"chat_id": chat_id})).first()
            conversation_id = chat.active_conversation_id if chat else None
            retitle = chat is not None and bool(chat_title) and chat.title != chat_title
            window = await self._window(conn, conversation_id, history_tokens) if conversation_id else HistoryWindow([])
        async with self._db.writing() as conn:
            if conversation_id is None or retitle:
                conversation_id = await self._active_conversation(conn, chat_id, chat_type, chat_title)
            added = await conn.execute(_ADD_MESSAGE, {
                "conversation_id": conversation_id,
                "chat_id": chat_id,
                "user_id": user_id,
                "role": "user",
                "content": text,
                "tokens": tokens,
                # Until the answer is stored: a turn cut short by a crash is
                # found by this status at the next start (bot/recovery.py).
                "status": PENDING,
                "request_id": request_id,
                "created_at": utcnow(),
            })
            return TurnStart(
                conversation_id,
                added.scalar_one(),
                window.history,
                window.summary,
                window.overflow,
                window.unsummarized_tokens + tokens,
            )

    async def add_assistant_message(
        self,
        *,
        conversation_id: int,
        chat_id: int,
        user_id: int,
        text: str,
        tokens: int,
        status: str,
        request_id: str,
        model: str | None,
        prompt_version: str | None,
        tokens_in: int | None,
        tokens_out: int | None,
        answers: int | None = None,
    ) -> int:
        """Stores an answer; ``answers``: the user message it answers, which
        is marked answered in the same transaction."""
        async with self._db.writing() as conn:
            if answers is not None:
                await conn.execute(_SET_STATUS, {"message_id": answers, "new_status": "complete"})
            added = await conn.execute(_ADD_MESSAGE, {
                "conversation_id": conversation_id,
                "chat_id": chat_id,
                "user_id": user_id,
                "role": "assistant",
                "content": text,
                "tokens": tokens,
                "status": status,
                "request_id": request_id,
                "model": model,
                "prompt_version": prompt_version,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "created_at": utcnow(),
            })
            return int(added.scalar_one())

    async def settle(self, message_id: int, status: str) -> None:
        """A user message whose turn ended without a stored answer: UNANSWERED
        (the user was told the model failed) or MISSED (told it was lost)."""
        async with self._db.writing() as conn:
            await conn.execute(_SET_STATUS, {"message_id": message_id, "new_status": status})

    async def unfinished_turns(self, channels: Collection[str]) -> list[UnfinishedTurn]:
        """User messages of these channels' chats whose turn never ended (a
        crash), oldest first."""
        query = (
            select(Message, Chat.type, Chat.title)
            .join(Chat, Chat.id == Message.chat_id)
            # The partial index's own condition, as a literal, so SQLite uses it.
            .where(UNFINISHED, Message.role == "user", Chat.channel.in_(list(channels)))
            .order_by(Message.id)
        )
        async with self._db.reading() as s:
            rows = (await s.execute(query)).all()
            return [_unfinished(m, chat_type, title) for m, chat_type, title in rows if m.user_id is not None]

    async def extraction_backlog(self, since: datetime, per_user: int) -> list[ExtractionBacklog]:
        """Exchanges (a question and its answer) of private chats that memory
        extraction has not read, newer than ``since``: what a crash left
        waiting for a quiet spell. At most the last ``per_user`` per user."""
        # From the users seen since then (few), through the index on
        # messages.user_id: no scan of the whole history at start.
        cursor = func.coalesce(User.memory_extracted_until, 0)
        query = (
            select(Message.id, Message.user_id, Message.conversation_id, Message.role, Message.content, User.first_name)
            .select_from(User)
            .join(Message, (Message.user_id == User.id) & (Message.id > cursor))
            .join(Chat, Chat.id == Message.chat_id)
            .where(
                User.last_seen_at >= since,
                Message.created_at >= since,
                Message.status == "complete",
                Chat.type.in_(("private", "console")),
            )
            .order_by(Message.user_id, Message.conversation_id, Message.id)
        )
        async with self._db.reading() as s:
            rows = (await s.execute(query)).all()
        backlog: dict[int, ExtractionBacklog] = {}
        waiting: dict[tuple[int, int], tuple[int, str]] = {}  # (user, conversation) -> a question without answer yet
        for message_id, user_id, conversation_id, role, content, name in rows:
            key = (user_id, conversation_id)
            if role == "user":
                waiting[key] = (message_id, content)
            elif key in waiting:
                question_id, question = waiting.pop(key)
                entry = backlog.setdefault(user_id, ExtractionBacklog(user_id, name or "", []))
                entry.exchanges.append((question_id, question, content))
        for entry in backlog.values():
            del entry.exchanges[:-per_user]
        return list(backlog.values())

    async def turn_of_request(self, request_id: str) -> tuple[str, UnfinishedTurn] | None:
        """The user message a turn with this request id stored, with its
        status (pending, complete, ...); None when none was stored. The
        scaled mode's worker asks for an update delivered again."""
        query = (
            select(Message, Chat.type, Chat.title)
            .join(Chat, Chat.id == Message.chat_id)
            .where(Message.request_id == request_id, Message.role == "user")
            .order_by(Message.id.desc())
            .limit(1)
        )
        async with self._db.reading() as s:
            row = (await s.execute(query)).first()
        if row is None or row[0].user_id is None:
            return None
        m, chat_type, title = row
        return m.status, _unfinished(m, chat_type, title)

    async def newest_request_ids(self, prefix: str, limit: int) -> list[str]:
        """Request ids starting with ``prefix`` of the newest ``limit`` user
        messages that have one (read backwards along the primary key)."""
        query = (
            select(Message.request_id)
            .where(Message.role == "user", Message.request_id.startswith(prefix, autoescape=True))
            .order_by(Message.id.desc())
            .limit(limit)
        )
        async with self._db.reading() as s:
            return [request_id for request_id in (await s.scalars(query)).all() if request_id is not None]

    async def note_preview(self, request_id: str, message_ids: Sequence[int]) -> None:
        """The messages a group's live preview of this turn's answer occupies,
        on its user message: a turn finished after a crash edits them
        instead of leaving a partial answer above the late one."""
        async with self._db.session() as s:
            await s.execute(
                update(Message)
                .where(Message.request_id == request_id, Message.role == "user", Message.status.in_((PENDING, RECOVERING)))
                .values(preview_message_ids=json.dumps(list(message_ids)))
            )

    async def claim_unfinished(self, message_id: int) -> bool:
        """Takes an unfinished turn for recovery; False when it was taken or
        finished meanwhile. A turn left RECOVERING by a crash during recovery
        is taken again at the next start (one bot process per database)."""
        async with self._db.session() as s:
            result = await s.execute(
                update(Message)
                .where(Message.id == message_id, Message.status.in_((PENDING, RECOVERING)))
                .values(status=RECOVERING)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def new_conversation(self, chat_id: int, chat_type: str, chat_title: str | None) -> int:
        """Start a fresh conversation; the old one stays stored (for export)."""
        async with self._db.writing() as conn:
            await self._ensure_chat(conn, chat_id, chat_type, chat_title)
            return await self._open_conversation(conn, chat_id)

    async def history(self, chat_id: int, history_tokens: int) -> list[StoredMessage]:
        async with self._db.connected() as conn:
            chat = (await conn.execute(_CHAT_STATE, {"chat_id": chat_id})).first()
            if chat is None or chat.active_conversation_id is None:
                return []
            return (await self._window(conn, chat.active_conversation_id, history_tokens)).history

    async def window(self, conversation_id: int, history_tokens: int, before_id: int | None = None) -> HistoryWindow:
        """The summary and the budgeted history of a conversation (messages
        before ``before_id`` only, when given)."""
        async with self._db.connected() as conn:
            return await self._window(conn, conversation_id, history_tokens, before_id)

    async def summary_state(self, conversation_id: int) -> tuple[str | None, int | None]:
        """(running summary, id of the last message folded into it)."""
        async with self._db.reading() as s:
            conversation = await s.get(Conversation, conversation_id)
            if conversation is None:
                return None, None
            return conversation.summary, conversation.summary_until_id

    async def unsummarized(self, conversation_id: int, after_id: int | None, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` newest messages after ``after_id``, oldest first."""
        async with self._db.reading() as s:
            query = select(*_STORED_MESSAGE).where(
                Message.conversation_id == conversation_id, Message.status != "failed"
            )
            if after_id is not None:
                query = query.where(Message.id > after_id)
            rows = list(await s.execute(query.order_by(Message.id.desc()).limit(limit)))
            return [StoredMessage(*row) for row in reversed(rows)]

    async def save_summary(
        self, conversation_id: int, summary: str, until_id: int, expected_until_id: int | None
    ) -> bool:
        """Store a new summary if nobody folded meanwhile (compare-and-set)."""
        async with self._db.session() as s:
            result = await s.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation_id,
                    Conversation.summary_until_id.is_(None)
                    if expected_until_id is None
                    else Conversation.summary_until_id == expected_until_id,
                )
                .values(summary=summary, summary_until_id=until_id)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_chat_history(self, chat_id: int) -> None:
        async with self._db.session() as s:
            await s.execute(delete(Message).where(Message.chat_id == chat_id))

    async def _active_conversation(
        self, conn: AsyncConnection, chat_id: int, chat_type: str, chat_title: str | None
    ) -> int:
        active = await self._ensure_chat(conn, chat_id, chat_type, chat_title)
        if active is not None:
            return active
        return await self._open_conversation(conn, chat_id)

    async def _ensure_chat(
        self, conn: AsyncConnection, chat_id: int, chat_type: str, chat_title: str | None
    ) -> int | None:
        """Creates the chat on first contact, keeps its title current;
        returns its active conversation's id."""
        channel = channel_of_chat(chat_id)
        await conn.execute(self._add_chat, {
            "id": chat_id, "type": chat_type, "title": chat_title, "created_at": utcnow(), "channel": channel,
            # A console or API chat's id already names its user (bot/identity.py).
            "external_id": str(chat_id) if channel == TELEGRAM else None,
        })
        chat = (await conn.execute(_CHAT_STATE, {"chat_id": chat_id})).one()
        if chat_title and chat.title != chat_title:
            await conn.execute(_RETITLE, {"chat_id": chat_id, "new_title": chat_title})
        return chat.active_conversation_id

    async def _open_conversation(self, conn: AsyncConnection, chat_id: int) -> int:
        conversation_id = int((await conn.execute(
            _OPEN_CONVERSATION, {"chat_id": chat_id, "started_at": utcnow()}
        )).scalar_one())
        await conn.execute(_SET_ACTIVE, {"chat_id": chat_id, "conversation_id": conversation_id})
        return conversation_id

    async def _window(
        self, conn: AsyncConnection, conversation_id: int, history_tokens: int, before_id: int | None = None
    ) -> HistoryWindow:
        state = (await conn.execute(_SUMMARY_STATE, {"conversation_id": conversation_id})).first()
        summary, until_id = (state.summary, state.summary_until_id) if state else (None, None)
        rows = list(await conn.execute(_WINDOW, {
            "conversation_id": conversation_id,
            "after_id": until_id if until_id is not None else 0,
            "before_id": before_id if before_id is not None else _NO_ID_BOUND,
        }))
        picked: list[StoredMessage] = []
        used = 0
        overflow = False
        for row in rows:
            if used + row.tokens > history_tokens:
                overflow = True
                break
            used += row.tokens
            picked.append(StoredMessage(*row))
        picked.reverse()
        unsummarized = sum(row.tokens for row in rows)
        return HistoryWindow(picked, summary, overflow or len(rows) == HISTORY_ROW_LIMIT, unsummarized)




def _unfinished(m: Message, chat_type: str, title: str | None) -> UnfinishedTurn:
    assert m.user_id is not None
    previews = tuple(json.loads(m.preview_message_ids)) if m.preview_message_ids else ()
    return UnfinishedTurn(
        m.id, m.conversation_id, m.chat_id, chat_type, title, m.user_id, m.content, m.created_at, m.request_id,
        previews,
    )
