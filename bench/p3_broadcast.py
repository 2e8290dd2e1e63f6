"""P3: /broadcast to 3,000 users against the fake Bot API enforcing Telegram's
flood limit (30 messages per second, sliding window, 429 with retry-after
beyond it; progress edits count too).

The admin drafts and confirms a broadcast through the real bot; the fake's
own records say when each message arrived. Budgets (DESIGN.md section 6):
>= 27 msg/s, zero 429s, nobody lost, nobody twice."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert

from bench.harness import Row, poll_until, running_bot, verdict
from bot.app import Arium
from bot.settings import Settings
from bot.storage.models import User
from tests.fakes.telegram_server import FakeTelegram, SentMessage

ADMIN = 1001
FIRST_USER = 900_000
TEXT = "P3: the broadcast benchmark. Nothing to do, thank you!"
TELEGRAM_LIMIT = (30, 1.0)
# The bulk Pacer's rate unless told otherwise: the default REMINDER_SEND_RATE
# (28/s). The Pacer puts at most rate + 1.5 permits into any second, so 28
# leaves one message of room under Telegram's 30 for the jitter of HTTP
# arrivals on a busy machine; progress edits take permits too (one per 2 s).
DEFAULT_RATE: float = Settings.model_fields["reminder_send_rate"].default
MIN_RATE = 27.0


async def seed(app: Arium, count: int) -> list[int]:
    now = datetime.now(timezone.utc)
    ids = list(range(FIRST_USER, FIRST_USER + count))
    async with app.db.session() as s:
        await s.execute(insert(User), [
            {"id": i, "first_name": "Bench", "language": "en", "timezone": "UTC", "role": "user",
             "created_at": now, "last_seen_at": now, "active": True}
            for i in ids
        ])
    return ids


class CallCounter:
    """Counts the repository's claim and record transactions (wraps this one
    instance; the repository's code is not changed)."""

    def __init__(self, repo: Any) -> None:
        self.calls: Counter[str] = Counter()
        for name in ("claim", "record"):
            original = getattr(repo, name)

            async def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
                self.calls[_name] += 1
                return await _original(*args)

            setattr(repo, name, counted)


def control_message(tg: FakeTelegram, message_id: int) -> SentMessage:
    return next(m for m in tg.messages(ADMIN) if m.message_id == message_id)


async def run_p3(users: int, rate: float = DEFAULT_RATE) -> list[Row]:
    async with running_bot(
        "openai", bot_admin_ids=str(ADMIN), reminder_send_rate=rate, bot_poll_timeout=1,
    ) as rig:
        tg, app = rig.tg, rig.app
        recipients = await seed(app, users)
        counter = CallCounter(app.broadcaster._repo)  # noqa: SLF001 - the one seam that sees the transactions
        tg.user_text(f"/broadcast {TEXT}", chat_id=ADMIN)
        _, control = (await tg.wait_messages(ADMIN, 2, timeout=30))[-2:]
        data = control.reply_markup["inline_keyboard"][0][0]["callback_data"] if control.reply_markup else ""
        tg.rate_limit = TELEGRAM_LIMIT
        flood_before = tg.too_many_requests
        confirmed, cpu_start = time.monotonic(), time.process_time()
        tg.callback_query(data, chat_id=ADMIN, message_id=control.message_id)
        finished = await poll_until(
            lambda: control_message(tg, control.message_id).text.startswith("✅"), timeout=users / MIN_RATE + 60, interval=0.2
        )
        wall, cpu = time.monotonic() - confirmed, time.process_time() - cpu_start
        final = control_message(tg, control.message_id)
        arrivals = sorted(
            c.at for c in tg.calls_of("sendMessage")
            if c.status == 200 and c.params.get("text") == TEXT and c.params.get("chat_id") != ADMIN
        )
        copies = Counter(  # after the confirmation: the admin's preview is not a copy
            c.params.get("chat_id") for c in tg.calls_of("sendMessage")
            if c.status == 200 and c.params.get("text") == TEXT and c.at >= confirmed
        )
        edits = sorted(c.at for c in tg.calls_of("editMessageText") if c.params.get("message_id") == control.message_id)
        flood = tg.too_many_requests - flood_before
        transactions = dict(counter.calls)
    lost = sum(1 for u in [*recipients, ADMIN] if copies[u] == 0)
    twice = sum(1 for u in [*recipients, ADMIN] if copies[u] > 1)
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    gaps = [b - a for a, b in zip(edits, edits[1:])]
    detail = (
        f"{users:,} users + the admin; Pacer at {rate:g}/s; confirm -> summary {wall:.1f} s; "
        f"{transactions.get('claim', 0)} claim + {transactions.get('record', 0)} outcome transactions; "
        f"{len(edits)} progress edits, closest two {min(gaps) if gaps else 0:.2f} s apart; "
        f"process CPU {cpu:.1f} s ({cpu / max(1, users) * 1000:.1f} ms per message); "
        f"summary: {final.text.splitlines()[-1] if finished else 'not reached'}"
    )
    return [
        Row("P3", "-", "achieved rate (first to last user message)", f"{achieved:.1f} msg/s", f">= {MIN_RATE:g} msg/s", verdict(achieved >= MIN_RATE)),
        Row("P3", "-", "429 answers received", str(flood), "0", verdict(flood == 0)),
        Row("P3", "-", "lost / sent twice", f"{lost} / {twice}", "0 / 0", verdict(finished and lost == 0 and twice == 0)),
        Row("P3", "-", "detail", detail),
    ]
