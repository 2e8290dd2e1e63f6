"""ORM models. The schema changes only through Alembic migrations in migrations/."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from datetime import date

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.runtime.clock import utcnow

# The largest id a BigInteger column holds: a number past it names no row.
MAX_ROW_ID = 2**63 - 1

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class StoredText(TypeDecorator[str]):
    """Text without NUL characters. PostgreSQL's text type refuses them (a
    console line, an API request or a reminder carrying one failed its whole
    write there); they carry nothing a reader could see, so both databases
    store the text without them."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and "\x00" in value:
            return value.replace("\x00", "")
        return value


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, typed for Core statements built once."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Users the evaluation harness creates (bot/eval/) take ids from here up:
# beyond every Telegram user id handed out so far, below 2**52, where the
# channels' chat-id arithmetic (bot/identity.py) still holds. Listings,
# counts and broadcasts leave them out.
EVAL_USER_MIN = 2**52 - 2**40


def first_memory_version() -> int:
    """Microseconds since the epoch. An earlier user of the same id (erased
    since) started lower and would have needed more writes than microseconds
    passed to reach it; clocks of different machines a few seconds apart do
    not change that for any real user."""
    return time.time_ns() // 1000


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_name: Mapped[str] = mapped_column(String(256), default="")
    last_name: Mapped[str | None] = mapped_column(String(256))
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    language: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Admitted in allow-list mode (by /allow or an invite).
    allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    # False once Telegram says the user blocked the bot (403); a message from
    # them sets it back. Broadcasts go to active users only.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Per-user daily token budget; None uses the configured default.
    token_budget: Mapped[int | None] = mapped_column(Integer)
    # Their messages up to this id were read by memory extraction (or are
    # not to be: they deleted memories since). After a crash, the exchanges
    # past it are extracted at start. None: nothing read yet.
    memory_extracted_until: Mapped[int | None] = mapped_column(BigInteger)
    # Bumped in the transaction of every change to the user's memories: a
    # process whose cached FAISS index says an older number rebuilds it
    # (bot/memory/service.py). A new row starts from the clock, so a user
    # erased and created again never repeats a number a process still holds.
    memory_version: Mapped[int] = mapped_column(BigInteger, default=first_memory_version, server_default="0")


class Chat(Base):
    """A place messages are exchanged. A Telegram chat keeps Telegram's id; a
    console or API chat has an id from a range Telegram never uses
    (bot/identity.py), so ``id`` alone names any chat of any channel."""

    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), server_default="telegram")
    # The chat's id in its channel (Telegram's chat id, the console's user).
    external_id: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(256))
    active_conversation_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conversation(Base):
    """A run of messages in one chat; /new starts the next one."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    summary: Mapped[str | None] = mapped_column(StoredText)
    # The last message folded into `summary`; history sent to the model starts after it.
    summary_until_id: Mapped[int | None] = mapped_column(BigInteger)


# User messages whose turn has not ended (bot/recovery.py reads them at every
# start): a partial index holds only those few rows, never the whole history.
UNFINISHED = text("status IN ('pending', 'recovering')")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_unfinished", "id", sqlite_where=UNFINISHED, postgresql_where=UNFINISHED),
        Index("ix_messages_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"))
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(StoredText)
    tokens: Mapped[int] = mapped_column(Integer, default=0)  # estimate, for the history budget
    status: Mapped[str] = mapped_column(String(16), default="complete")  # complete | partial | failed
    request_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    prompt_version: Mapped[str | None] = mapped_column(String(64))
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A user message's answer as a group's live preview shows it (JSON list
    # of Telegram message ids), so a turn finished after a crash edits them.
    preview_message_ids: Mapped[str | None] = mapped_column(StoredText)


class ToolEvent(Base):
    """One executed tool call (the tools feature writes these in batches, for /stats)."""

    __tablename__ = "tool_events"
    __table_args__ = (Index("ix_tool_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tool: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # ok | error | invalid | timeout | busy | unknown | denied
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(300))


class Reminder(Base):
    """The truth about every reminder; the scheduler only times the next firings.

    ``revision`` changes whenever the schedule or status changes, so a timer
    armed for an older revision finds nothing to claim. ``claimed_at`` is set
    in its own transaction just before a send and cleared when the outcome is
    recorded: a row still claimed after a crash was (probably) delivered and
    is recorded as such, never sent twice."""

    __tablename__ = "reminders"
    __table_args__ = (
        Index("ix_reminders_status_next_fire_at", "status", "next_fire_at"),
        Index("ix_reminders_user_id_status", "user_id", "status"),
        Index("ix_reminders_chat_id_status", "chat_id", "status"),
        Index("ux_reminders_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    # The channel of chat_id: the reminder is delivered through it, or, where
    # that channel cannot send (the API) or is not running, to its owner on Telegram.
    channel: Mapped[str] = mapped_column(String(16), server_default="telegram")
    text: Mapped[str] = mapped_column(StoredText)
    timezone: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(128))  # Rule.encode(); None for one-shot
    status: Mapped[str] = mapped_column(String(16))  # active | paused | fired | done | cancelled | failed
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fire_count: Mapped[int] = mapped_column(Integer, default=0)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The turn and tool call that created it (RequestContext.tool_call_key):
    # the same call re-run after a crash finds this row instead of adding one.
    idempotency_key: Mapped[str | None] = mapped_column(String(64))


class Memory(Base):
    """One thing remembered about a user. The row is the truth: the embedding is
    kept here so per-user FAISS indexes (a cache) can be rebuilt without
    re-encoding. SQLite keeps a full-text index of ``search_terms`` in
    ``memories_fts`` by trigger; PostgreSQL a GIN index over it."""

    __tablename__ = "memories"
    # The two narrow indexes let an index load check a user's rows without
    # reading them: each row carries a ~1.5 KB embedding.
    __table_args__ = (
        Index("ix_memories_user_id_id", "user_id", "id"),
        Index("ix_memories_user_id_embedding_model", "user_id", "embedding_model"),
        Index("ix_memories_user_id_updated_at", "user_id", "updated_at"),
        Index("ux_memories_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(StoredText)
    kind: Mapped[str] = mapped_column(String(16), default="fact")
    importance: Mapped[int] = mapped_column(Integer, default=3)  # 1 (trivia) .. 5 (asked to remember)
    source: Mapped[str] = mapped_column(String(16), default="extracted")  # extracted | explicit
    source_message_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, normalized
    embedding_model: Mapped[str | None] = mapped_column(String(256))
    # The Snowball stems of the text's content words (bot/memory/keyword.py),
    # written with it: what keyword search matches, on either database.
    search_terms: Mapped[str] = mapped_column(StoredText, default="", server_default="")
    # The turn and tool call that stored it (the remember tool), as for reminders.
    idempotency_key: Mapped[str | None] = mapped_column(String(64))


class UsageDaily(Base):
    """Turns and tokens per UTC day, user and model; written in batches by the
    statistics writer, read by /stats and the daily token budget."""

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_user_id_day", "user_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)  # "" when no model answered
    turns: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEntry(Base):
    """One admin action: who, what, when, with which arguments, and the outcome."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    admin_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    arguments: Mapped[str] = mapped_column(StoredText, default="")
    outcome: Mapped[str] = mapped_column(String(300), default="")


class Invite(Base):
    """A one-time invite link for allow-list mode (t.me/<bot>?start=<code>)."""

    __tablename__ = "invites"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by: Mapped[int | None] = mapped_column(BigInteger)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RuntimeSetting(Base):
    """Settings changed from the chat at run time (model tier order, active
    prompt versions); JSON values, kept across restarts."""

    __tablename__ = "runtime_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(StoredText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)


class Broadcast(Base):
    """One /broadcast: its text, state and counters. Deliveries hold the truth
    about who got it; the counters are for the progress message."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(StoredText)
    status: Mapped[str] = mapped_column(String(16))  # draft | running | done | cancelled
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    blocked: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class BroadcastDelivery(Base):
    """One recipient of a broadcast. ``claimed`` is written before the send and
    ``sent`` / ``blocked`` / ``failed`` after, so a restart never sends twice."""

    __tablename__ = "broadcast_deliveries"
    __table_args__ = (Index("ix_broadcast_deliveries_broadcast_id_status", "broadcast_id", "status"),)

    broadcast_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | claimed | sent | blocked | failed
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Made by migrations, not by the ORM (keyword search for memories: SQLite's
# FTS5 table with its shadow tables, PostgreSQL's expression index).
MIGRATION_ONLY_NAMES = ("memories_fts", "ix_memories_terms_tsv")


def include_in_autogenerate(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's include_name hook: autogenerate must not propose dropping those."""
    return not (name and name.startswith(MIGRATION_ONLY_NAMES))


class ApiKey(Base):
    """A key of the HTTP API. Only its SHA-256 is stored; the key itself is
    shown once, when it is made. One key belongs to one user."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Identity(Base):
    """Who a person is in one channel: (channel, their id there) -> the Arium
    user. A Telegram user's first message records theirs (their Telegram id
    is also their user id); /link moves identities of several channels onto
    one user, so memories and reminders follow the person."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_identities_channel_external_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LinkCode(Base):
    """A one-time /link code: shown in one channel, entered in another. Only
    its SHA-256 is stored; it expires, and entering it deletes it."""

    __tablename__ = "link_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # where it was shown
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ToolRound(Base):
    """One round of tool calls of a turn still running: what the model
    asked and what the tools answered, written as soon as they answered.
    A turn finished after a crash replays its rounds to the model instead
    of running the tools again (no second reminder, memory or file). Kept
    only while the turn runs."""

    __tablename__ = "tool_rounds"
    __table_args__ = (Index("ix_tool_rounds_request_id", "request_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)  # /deleteme erases these too
    payload: Mapped[str] = mapped_column(StoredText)  # JSON: text, calls, answers
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EvalRun(Base):
    """One run of an evaluation suite (bot/eval/): one or two variants (A,
    and B for --config-b) of every task."""

    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    suite: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | finished | failed
    variants: Mapped[str] = mapped_column(StoredText)  # JSON: {"A": "what configured it", "B": ...}
    tasks_total: Mapped[int] = mapped_column(Integer, default=0)  # tasks x variants
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EvalResult(Base):
    """One task of a run under one variant: its verdict, every check, the
    transcript and what it cost."""

    __tablename__ = "eval_results"
    __table_args__ = (Index("ix_eval_results_run_variant", "run_id", "variant"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("eval_runs.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(1))  # A | B
    task_id: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    passed: Mapped[bool] = mapped_column(Boolean)
    checks: Mapped[str] = mapped_column(StoredText)  # JSON: [{"check", "passed", "detail"}]
    transcript: Mapped[str] = mapped_column(StoredText)  # JSON: [{"user", "assistant"}]
    error: Mapped[str | None] = mapped_column(String(500))  # timeout, tool-call cap, no answer
    first_token_ms: Mapped[int | None] = mapped_column(Integer)
    total_ms: Mapped[int] = mapped_column(Integer)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float | None] = mapped_column(Float)  # USD by MODEL_PRICES; None when unpriced
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    tools: Mapped[str] = mapped_column(StoredText, default="[]")  # JSON: names in call order
    model: Mapped[str | None] = mapped_column(String(128))  # the endpoint that answered last
    fallbacks: Mapped[int] = mapped_column(Integer, default=0)  # turns answered by a later tier
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentTurn(Base):
    """One turn answered in multi-agent mode (bot/agents/): which agent, why
    it was chosen, and how the turn went, for /stats and the eval harness."""

    __tablename__ = "agent_turns"
    __table_args__ = (Index("ix_agent_turns_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)  # /deleteme erases these too
    chat_id: Mapped[int] = mapped_column(BigInteger)
    agent: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(String(16))  # pinned | mention | rule | classifier | default | ...
    switched: Mapped[bool] = mapped_column(Boolean, default=False)  # another agent answered this chat's last turn
    status: Mapped[str] = mapped_column(String(16))  # complete | partial | failed
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(String(128))


class AgentPlan(Base):
    """An orchestrator's plan for one turn, with each step's outcome as it
    finishes: a turn resumed after a crash carries on from the steps done."""

    __tablename__ = "agent_plans"

    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(StoredText)  # JSON: the steps, their status and results
    status: Mapped[str] = mapped_column(String(16))  # running | done | stopped
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatAgent(Base):
    """The agent a chat pinned with /agent NAME (multi-agent mode)."""

    __tablename__ = "chat_agents"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    agent: Mapped[str] = mapped_column(String(24))
    set_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TelegramUpdate(Base):
    """A Telegram update a worker of the scaled mode took (bot/scale/worker.py):
    a delivery the broker repeats after a crash is recognised by its id and
    not answered twice. Rows older than two days are pruned."""

    __tablename__ = "telegram_updates"
    __table_args__ = (Index("ix_telegram_updates_claimed_at", "claimed_at"),)

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16))  # received | started | done
    worker: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The update itself while it is not done (the single process's inbox).
    payload: Mapped[str | None] = mapped_column(StoredText)
