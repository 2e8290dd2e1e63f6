"""P1: the time the bot adds to one turn, model time excluded.

One private chat with 1,000 stored history messages and 10,000 stored
memories (DESIGN.md section 6); the fake model answers
at once. Per turn: injected update -> final sendMessage at the fake Telegram,
minus the span the fake model spent on the request (arrival -> answer written).
Side by side with the thinnest bot (bench/baseline_bot.py: the same 1,000
messages in its dict, no memories, nothing else): Arium's median should stay
within 1.3x of it (DESIGN.md section 6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import insert

from bench.baseline_bot import ThinnestBot
from bench.harness import Rig, Row, ms, percentile, running, until_idle, verdict
from bench.memory import seed_user
from bot.llm.types import estimate_tokens
from bot.storage.models import Message
from bot.runtime.clock import utcnow
from bot.storage.repositories import UserProfile
from tests.fakes.model_server import Reply, Request

CHAT = 5001
HISTORY_MESSAGES = 1_000
MEMORIES = 10_000  # DESIGN.md section 6: 10k memories and 1k history messages for the user
P99_BUDGET = 0.060
RATIO_BUDGET = 1.3  # Arium's median against the thinnest bot's
MEASURE_SECONDS = 30.0
# A few sentences each (~60 estimated tokens), so the default 4,000-token history
# budget is full and each model request carries ~60 past messages, as a long chat would.
HISTORY_TEXT = (
    "This is stored message {i} of a long conversation about planning a trip, "
    "comparing train and plane tickets, hotels near the old town, and what to pack."
)


@dataclass(frozen=True)
class Turn:
    total: float  # injected -> final sendMessage arrived
    model: float  # model request arrived -> answer written
    before_model: float  # injected -> model request arrived
    after_model: float  # answer written -> final sendMessage arrived
    history: int  # past messages in the model request

    @property
    def overhead(self) -> float:
        return self.total - self.model


# The measured turns are the same size as the stored ones (~60 tokens a side),
# so the number of history messages per request stays where the seed put it.
QUESTION = "turn {i}: " + HISTORY_TEXT.format(i="new") + " Which train should I take?"
ANSWER = (
    "Take the 7:40 morning train: it is faster door to door than the plane once you count "
    "the airport transfers, and the station is a short walk from the old town hotels."
)


def instant_reply(request: Request) -> Reply:
    return Reply(text=ANSWER)


async def seed_history(rig: Rig, count: int = HISTORY_MESSAGES) -> None:
    """Bulk-insert the stored history straight through the ORM (one statement),
    so seeding takes milliseconds instead of a thousand bot turns. The
    thinnest bot gets the same messages in its dict."""
    if isinstance(rig.app, ThinnestBot):
        rig.app.seed_history(CHAT, [
            {"role": "user" if i % 2 == 0 else "assistant", "content": HISTORY_TEXT.format(i=i)} for i in range(count)
        ])
        return
    conversation_id = await rig.app.messages.new_conversation(CHAT, "private", None)
    rows = [
        {
            "conversation_id": conversation_id,
            "chat_id": CHAT,
            "user_id": CHAT if i % 2 == 0 else None,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": HISTORY_TEXT.format(i=i),
            "tokens": estimate_tokens(HISTORY_TEXT.format(i=i)),
            "status": "complete",
            "created_at": utcnow(),
        }
        for i in range(count)
    ]
    async with rig.app.db.session() as s:
        await s.execute(insert(Message), rows)


async def seed_memories(rig: Rig, count: int = MEMORIES) -> None:
    """Real memory rows for the user (the FTS triggers fire as for any insert),
    with random unit vectors as embeddings, as P4 seeds them (bench/memory.py).
    The user row comes first (memories reference it); the bot refreshes it on
    the first turn. The FAISS index is built from these rows on the first recall."""
    await rig.app.users.touch(UserProfile(CHAT, "Ann"), "user")
    embeddings = rig.app.memory.embeddings
    await seed_user(rig.app.db, CHAT, count, embeddings.name, embeddings.dim)


async def one_turn(rig: Rig, index: int) -> Turn:
    text = QUESTION.format(i=index)
    fakes = rig.fakes
    expected = await fakes.message_count(CHAT) + 1
    injected = await fakes.user_text(text, CHAT)
    await fakes.wait_messages(CHAT, expected)
    final = await fakes.last_sent(CHAT)
    # A fast error notice must not pass for a fast turn.
    assert "7:40" in final.text, f"turn {index} was not answered: {final.text!r}"
    timing = await fakes.model_timing(text)
    assert timing is not None, f"the model never saw turn {index}"
    finished = timing.finished or timing.arrived
    # The next turn starts from an idle bot, as after a human's pause.
    await until_idle(rig.app)
    return Turn(
        total=final.at - injected,
        model=finished - timing.arrived,
        before_model=timing.arrived - injected,
        after_model=final.at - finished,
        history=timing.messages - 2,  # minus system and new user message
    )


@dataclass(frozen=True)
class P1Run:
    label: str
    memories: int
    turns: list[Turn]
    drafts: int
    cpu_per_turn: float
    fakes_cpu: float | None

    @property
    def median(self) -> float:
        return percentile([t.overhead for t in self.turns], 50)


async def measure_p1(
    provider: str, turns: int, warmup: int, fakes: str = "process", memories: int = MEMORIES, bot: str = "arium"
) -> P1Run:
    # The real default preview interval; with an instant model a preview should barely happen.
    # One user sends ~250 messages in a minute here: the per-user rate limit is
    # raised (not switched off, so its check still runs on every turn).
    async with running(
        bot, provider, fakes, bot_draft_interval=0.6, bot_rate_per_minute=6000, bot_rate_burst=1000,
    ) as rig:
        await rig.fakes.set_responder(instant_reply)
        await seed_history(rig)
        memories = memories if bot == "arium" else 0
        if memories:
            await seed_memories(rig, memories)
        for i in range(warmup):
            await one_turn(rig, -1 - i)
        drafts_before = await rig.fakes.call_count("sendMessageDraft")
        measured: list[Turn] = []
        # On a loaded machine 200 turns may not fit the run's time limit: report what was measured.
        stop_at = time.monotonic() + MEASURE_SECONDS
        cpu_start, fakes_cpu_start = time.process_time(), await rig.fakes.process_cpu()
        while len(measured) < turns and time.monotonic() < stop_at:
            measured.append(await one_turn(rig, len(measured)))
        # CPU of this whole process (bot, and the fakes when in-process; all threads):
        # steadier than latency on a shared machine.
        cpu_per_turn = (time.process_time() - cpu_start) / len(measured)
        fakes_cpu = (await rig.fakes.process_cpu() - fakes_cpu_start) / len(measured) if fakes == "process" else None
        drafts = await rig.fakes.call_count("sendMessageDraft") - drafts_before
    return P1Run(f"{provider}, {bot}, fakes {fakes}", memories, measured, drafts, cpu_per_turn, fakes_cpu)


async def run_p1(provider: str, turns: int, warmup: int, fakes: str = "process", memories: int = MEMORIES) -> list[Row]:
    """The thinnest bot, then Arium, on fresh fakes each; their rows and the ratio of medians."""
    thinnest = await measure_p1(provider, turns, warmup, fakes, memories, "thinnest")
    arium = await measure_p1(provider, turns, warmup, fakes, memories, "arium")
    ratio = arium.median / thinnest.median
    return [*p1_rows(thinnest), *p1_rows(arium), Row(
        "P1", f"{provider}, fakes {fakes}", "Arium / thinnest bot, median overhead",
        f"{ratio:.2f}x ({ms(arium.median)} / {ms(thinnest.median)})", f"<= {RATIO_BUDGET}x",
        verdict(ratio <= RATIO_BUDGET),
    )]


def p1_rows(run: P1Run) -> list[Row]:
    turns = run.turns
    history_sent = turns[-1].history
    overhead = [t.overhead for t in turns]
    p50, p99 = percentile(overhead, 50), percentile(overhead, 99)

    def p50_of(values: list[float]) -> str:
        return ms(percentile(values, 50))

    detail = (
        f"p50 split: before model {p50_of([t.before_model for t in turns])}, "
        f"model {p50_of([t.model for t in turns])}, after model {p50_of([t.after_model for t in turns])}; "
        f"max {ms(max(overhead))}; bot process CPU {ms(run.cpu_per_turn)} per turn"
        + (f" (fakes process {ms(run.fakes_cpu)})" if run.fakes_cpu is not None else " (fakes included)")
        + f"; {len(turns)} turns measured, {run.drafts} drafts sent, "
        f"{history_sent} history messages per model request, {run.memories:,} stored memories"
    )
    return [
        Row("P1", run.label, "turn overhead p50", ms(p50)),
        Row("P1", run.label, "turn overhead p99", ms(p99), "<= 60 ms", verdict(p99 <= P99_BUDGET)),
        Row("P1", run.label, "detail", detail),
    ]
