"""Conversation on its own, with in-process fakes at its two outer seams: a
ReplySink that records what the user would see, and a scripted Provider
under the real FallbackChain and ModelService. Everything else is real: the
database (migrated; PostgreSQL too when TEST_DATABASE_URL is set), the
repositories and the prompt templates of prompts/. No Telegram, no HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from bot.auth import Role
from bot.context import ChatType, RequestContext, new_request_id
from bot.conversation import NO_MEMORIES, Conversation, ConversationConfig, TurnResult
from bot.i18n import t
from bot.llm.breaker import CircuitBreaker
from bot.llm.chain import ChainPolicy, Endpoint, FallbackChain, Tier
from bot.llm.service import ModelService
from bot.llm.types import ChatRequest
from bot.prompts import PromptRegistry
from bot.storage.db import Database
from bot.storage.repositories import UNANSWERED, MessageRepository, StoredMessage, UserProfile, UserRepository
from tests.fakes.scripted_provider import Answer, BreakAfter, Refuse, ScriptedProvider

ANN = UserProfile(1001, "Ann")
BOB = UserProfile(1002, "Bob")
FAMILY_GROUP = -100500
# A token budget no test's history reaches: reads back every stored message.
WHOLE_HISTORY = 10**9


@dataclass
class RecordingSink:
    """A ReplySink that keeps every call, in order, as the user would see them."""

    updates: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    async def update(self, text: str) -> None:
        self.updates.append(text)

    async def finish(self, text: str) -> None:
        self.finished.append(text)

    async def notice(self, text: str) -> None:
        self.notices.append(text)

    async def progress(self, hint: str) -> None:
        self.hints.append(hint)


@dataclass
class Rig:
    conversation: Conversation
    messages: MessageRepository
    prompts: PromptRegistry
    main: ScriptedProvider  # the first tier
    backup: ScriptedProvider  # the second tier: unscripted, so any failover to it fails the test

    async def say(self, ctx: RequestContext, text: str) -> tuple[TurnResult, RecordingSink]:
        sink = RecordingSink()
        return await self.conversation.handle(ctx, text, sink), sink

    async def stored(self, chat_id: int) -> list[StoredMessage]:
        return await self.messages.history(chat_id, WHOLE_HISTORY)


def endpoint(provider: ScriptedProvider, tier: str) -> Endpoint:
    breaker = CircuitBreaker(failure_threshold=3, window=60, cooldown=30, hard_cooldown=300)
    return Endpoint(provider, breaker, tier=tier)


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    db = Database(database_url)
    await db.migrate()
    users = UserRepository(db, "UTC")
    for profile in (ANN, BOB):
        await users.touch(profile, Role.USER.value)
    main, backup = ScriptedProvider("main-model", "main"), ScriptedProvider("backup-model", "backup")
    # One attempt per endpoint: retries are the chain's business (test_chain.py),
    # and this keeps one scripted reply per model request.
    tiers = [Tier("main", [endpoint(main, "main")]), Tier("backup", [endpoint(backup, "backup")])]
    chain = FallbackChain(tiers, ChainPolicy(max_attempts=1))
    messages, prompts = MessageRepository(db), PromptRegistry()
    conversation = Conversation(
        messages=messages, prompts=prompts, models=ModelService(chain), config=ConversationConfig()
    )
    try:
        yield Rig(conversation, messages, prompts, main, backup)
    finally:
        await db.dispose()


def context(user: UserProfile, *, chat_id: int | None = None) -> RequestContext:
    """A fresh turn's context: the user's private chat, or the group ``chat_id``."""
    return RequestContext(
        user_id=user.id,
        chat_id=user.id if chat_id is None else chat_id,
        chat_type=ChatType.PRIVATE if chat_id is None else ChatType.GROUP,
        role=Role.USER,
        language="en",
        timezone="UTC",
        user_name=user.first_name,
        request_id=new_request_id(),
        received_at=datetime.now(timezone.utc),
    )


def dialogue(request: ChatRequest) -> list[tuple[str, str]]:
    """(role, content) of a model request's messages after its system prompt."""
    assert request.messages[0].role == "system", "the system prompt goes first"
    assert all(m.role != "system" for m in request.messages[1:]), "one system prompt only"
    return [(m.role, m.content) for m in request.messages[1:]]


def rows(stored: list[StoredMessage]) -> list[tuple[str, str, str]]:
    return [(m.role, m.content, m.status) for m in stored]


async def test_a_private_turn_streams_the_answer_and_stores_both_sides(rig: Rig) -> None:
    reply = Answer(("Hello", ", Ann", "! How can I help?"))
    rig.main.script(reply)
    result, sink = await rig.say(context(ANN), "hi there")

    assert (result.status, result.text) == ("complete", reply.text)
    assert sink.finished == [reply.text] and sink.notices == []
    # The answer grows piece by piece, each view extending the one before it.
    assert sink.updates[-1] == reply.text
    assert all(later.startswith(earlier) for earlier, later in zip(sink.updates, sink.updates[1:]))
    assert result.model == "main/scripted:main-model"
    assert (result.tokens_in, result.tokens_out) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert result.prompt_version == rig.prompts.get("system").ref
    # The user's message is stored as answered ("complete"), the answer after it.
    assert rows(await rig.stored(ANN.id)) == [("user", "hi there", "complete"), ("assistant", reply.text, "complete")]
    assert rig.backup.requests == []


async def test_the_next_turn_carries_the_earlier_turn_after_the_system_prompt(rig: Rig) -> None:
    first, second = Answer(("Nice to meet you, Ann.",)), Answer(("You are Ann.",))
    rig.main.script(first, second)
    await rig.say(context(ANN), "my name is Ann")
    await rig.say(context(ANN), "what is my name?")

    opening, follow_up = rig.main.requests
    assert dialogue(opening) == [("user", "my name is Ann")]
    assert dialogue(follow_up) == [
        ("user", "my name is Ann"),
        ("assistant", first.text),
        ("user", "what is my name?"),
    ]
    # Without a memory service the prompt says plainly that nothing is remembered.
    system = follow_up.messages[0].content
    assert NO_MEMORIES in system
    assert "Ann" in system and "private chat" in system


async def test_in_a_group_every_message_is_stored_and_sent_with_its_author(rig: Rig) -> None:
    rig.main.script(Answer(("Hi Ann!",)), Answer(("Hi Bob!",)))
    await rig.say(context(ANN, chat_id=FAMILY_GROUP), "hello everyone")
    await rig.say(context(BOB, chat_id=FAMILY_GROUP), "hi all")

    # The model can tell who said what: each user message names its author.
    assert dialogue(rig.main.requests[1]) == [
        ("user", "Ann: hello everyone"),
        ("assistant", "Hi Ann!"),
        ("user", "Bob: hi all"),
    ]
    assert "group chat" in rig.main.requests[1].messages[0].content
    stored = await rig.stored(FAMILY_GROUP)
    assert rows(stored) == [
        ("user", "Ann: hello everyone", "complete"),
        ("assistant", "Hi Ann!", "complete"),
        ("user", "Bob: hi all", "complete"),
        ("assistant", "Hi Bob!", "complete"),
    ]
    assert [m.user_id for m in stored if m.role == "user"] == [ANN.id, BOB.id]
    # Nothing of the group leaks into Ann's private chat.
    assert await rig.stored(ANN.id) == []


async def test_a_new_conversation_starts_without_the_earlier_history(rig: Rig) -> None:
    ann = context(ANN)
    # A /new before the chat's first message is harmless.
    await rig.conversation.new_conversation(ann)
    rig.main.script(Answer(("Noted: you like tea.",)), Answer(("What would you like to talk about?",)))
    await rig.say(ann, "I like tea")
    await rig.conversation.new_conversation(ann)
    await rig.say(context(ANN), "let's start over")

    assert dialogue(rig.main.requests[1]) == [("user", "let's start over")]
    assert rows(await rig.stored(ANN.id)) == [
        ("user", "let's start over", "complete"),
        ("assistant", "What would you like to talk about?", "complete"),
    ]


async def test_when_every_model_is_down_the_user_gets_a_friendly_notice(rig: Rig) -> None:
    rig.main.script(Refuse())
    rig.backup.script(Refuse())
    ann = context(ANN)
    result, sink = await rig.say(ann, "hello?")

    assert (result.status, result.text) == ("failed", "")
    assert len(rig.main.requests) == 1 and len(rig.backup.requests) == 1, "every endpoint was tried"
    assert sink.finished == [] and sink.updates == []
    assert sink.notices == [t("model_failed", "en")]
    # Nothing of the failure's inside (exception names, the provider) reaches the user.
    assert not any(leak in sink.notices[0] for leak in ("Traceback", "Error", "Connection", "scripted"))
    # The message is kept, settled as unanswered (not pending: no crash recovery
    # re-answers it) ...
    assert rows(await rig.stored(ANN.id)) == [("user", "hello?", UNANSWERED)]
    settled = await rig.messages.turn_of_request(ann.request_id)
    assert settled is not None and settled[0] == UNANSWERED
    # ... and, as the notice promises ("your message was saved"), the next
    # turn's model sees it.
    rig.main.script(Answer(("Hello! Sorry for the wait.",)))
    await rig.say(context(ANN), "hello again?")
    assert dialogue(rig.main.requests[-1]) == [("user", "hello?"), ("user", "hello again?")]


async def test_a_failover_before_the_first_token_is_invisible_to_the_user(rig: Rig) -> None:
    rig.main.script(Refuse())
    rig.backup.script(Answer(("Here is the backup's answer.",)))
    result, sink = await rig.say(context(ANN), "hi")

    assert (result.status, result.model) == ("complete", "backup/scripted:backup-model")
    assert sink.notices == [] and sink.finished == ["Here is the backup's answer."]
    assert dialogue(rig.backup.requests[0]) == dialogue(rig.main.requests[0]) == [("user", "hi")]


async def test_a_stream_that_breaks_after_text_ends_as_a_partial_answer(rig: Rig) -> None:
    rig.main.script(BreakAfter(("The answer", " is forty")))
    result, sink = await rig.say(context(ANN), "what is six times seven?")

    assert (result.status, result.text) == ("partial", "The answer is forty")
    assert result.model == "main/scripted:main-model", "usage and /stats name the endpoint that answered"
    # The user keeps what they already saw, with a note that it was cut off;
    # no other endpoint starts the answer afresh.
    assert len(sink.finished) == 1 and sink.notices == []
    assert sink.finished[0].startswith("The answer is forty") and sink.finished[0] != "The answer is forty"
    assert rig.backup.requests == []
    assert rows(await rig.stored(ANN.id)) == [
        ("user", "what is six times seven?", "complete"),
        ("assistant", "The answer is forty", "partial"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("   ", id="blank"),
        pytest.param(("a long paste, " * 3_600)[:50_000], id="50k-chars"),
        pytest.param("Привет 👋🏽 — naïve 中文 👨‍👩‍👧 𝔘𝔫𝔦 \u202eRTL\u202c", id="unicode"),
    ],
)
async def test_the_core_passes_odd_text_through_to_the_model_and_stores_it(rig: Rig, text: str) -> None:
    # Stripping and refusing blank or over-long input is the inbound path's
    # job (bot/channels/inbound.py); the conversation itself takes any text.
    rig.main.script(Answer(("Got it.",)))
    result, sink = await rig.say(context(ANN), text)

    assert result.status == "complete" and sink.finished == ["Got it."]
    assert dialogue(rig.main.requests[0]) == [("user", text)]
    assert rows(await rig.stored(ANN.id)) == [("user", text, "complete"), ("assistant", "Got it.", "complete")]


async def test_a_nul_character_reaches_the_model_and_is_dropped_from_what_is_stored(rig: Rig) -> None:
    # PostgreSQL's text refuses NUL: the turn used to fail there before the
    # user was told anything. The model gets the text as sent.
    rig.main.script(Answer(("Got it.",)))
    result, sink = await rig.say(context(ANN), "a\x00b")

    assert result.status == "complete" and sink.finished == ["Got it."]
    assert dialogue(rig.main.requests[0]) == [("user", "a\x00b")]
    assert rows(await rig.stored(ANN.id)) == [("user", "ab", "complete"), ("assistant", "Got it.", "complete")]
