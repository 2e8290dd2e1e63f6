"""P1: the time the bot adds to one turn, model time excluded.

One private chat with 1,000 stored history messages; the fake model answers
at once. Per turn: injected update -> final sendMessage at the fake Telegram,
minus the span the fake model spent on the request (arrival -> answer written).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import insert

from bench.harness import (
    Rig,
    Row,
    model_request_for,
    ms,
    percentile,
    running_bot,
    sent_messages,
    until_idle,
    verdict,
)
from bot.llm.types import estimate_tokens
from bot.storage.models import Message, utcnow
from tests.fakes.model_server import Reply, Request

CHAT = 5001
HISTORY_MESSAGES = 1_000
P50_BUDGET, P99_BUDGET = 0.020, 0.060
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
    so seeding takes milliseconds instead of a thousand bot turns."""
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


async def one_turn(rig: Rig, index: int) -> Turn:
    text = QUESTION.format(i=index)
    expected = len(rig.tg.messages(CHAT)) + 1
    injected = time.monotonic()
    rig.tg.user_text(text, chat_id=CHAT)
    await rig.tg.wait_messages(CHAT, expected)
    final = [c for c in sent_messages(rig.tg) if c.params.get("chat_id") == CHAT][-1]
    # A fast error notice must not pass for a fast turn.
    assert "7:40" in str(final.params.get("text")), f"turn {index} was not answered: {final.params.get('text')!r}"
    request = model_request_for(rig.model, text)
    assert request is not None, f"the model never saw turn {index}"
    finished = rig.clock.finished_at(request) or request.at
    # The next turn starts from an idle bot, as after a human's pause.
    await until_idle(rig.app)
    return Turn(
        total=final.at - injected,
        model=finished - request.at,
        before_model=request.at - injected,
        after_model=final.at - finished,
    )


async def run_p1(provider: str, turns: int, warmup: int) -> list[Row]:
    # The real default preview interval; with an instant model a preview should barely happen.
    async with running_bot(provider, bot_draft_interval=0.6) as rig:
        rig.model.responder = instant_reply
        await seed_history(rig)
        for i in range(warmup):
            await one_turn(rig, -1 - i)
        drafts_before = len(rig.tg.calls_of("sendMessageDraft"))
        measured: list[Turn] = []
        # On a loaded machine 200 turns may not fit the run's time limit: report what was measured.
        stop_at = time.monotonic() + MEASURE_SECONDS
        cpu_start = time.process_time()
        while len(measured) < turns and time.monotonic() < stop_at:
            measured.append(await one_turn(rig, len(measured)))
        # CPU of this whole process (bot and fakes, all threads): steadier than latency on a shared machine.
        cpu_per_turn = (time.process_time() - cpu_start) / len(measured)
        drafts = len(rig.tg.calls_of("sendMessageDraft")) - drafts_before
        history_sent = len(rig.model.chat_requests()[-1].messages) - 2  # minus system and new user message
    return p1_rows(provider, measured, drafts, history_sent, cpu_per_turn)


def p1_rows(provider: str, turns: list[Turn], drafts: int, history_sent: int, cpu_per_turn: float) -> list[Row]:
    overhead = [t.overhead for t in turns]
    p50, p99 = percentile(overhead, 50), percentile(overhead, 99)

    def p50_of(values: list[float]) -> str:
        return ms(percentile(values, 50))

    detail = (
        f"p50 split: before model {p50_of([t.before_model for t in turns])}, "
        f"model {p50_of([t.model for t in turns])}, after model {p50_of([t.after_model for t in turns])}; "
        f"max {ms(max(overhead))}; process CPU {ms(cpu_per_turn)} per turn; {len(turns)} turns measured, {drafts} drafts sent, "
        f"{history_sent} history messages per model request"
    )
    return [
        Row("P1", provider, "turn overhead p50", ms(p50), "<= 20 ms", verdict(p50 <= P50_BUDGET)),
        Row("P1", provider, "turn overhead p99", ms(p99), "<= 60 ms", verdict(p99 <= P99_BUDGET)),
        Row("P1", provider, "detail", detail),
    ]
