"""P5: reminders with 100,000 stored.

    .venv/bin/python -m bench.reminders            # about a minute and a half
    .venv/bin/python -m bench.reminders --stored 20000 --burst 300   # quicker

Measures, against the fake Bot API on 127.0.0.1 with Telegram's flood limit
(30 messages per second, sliding window) and the real bot on SQLite:

- start: Arium.start() with 100,000 reminders in the table (budget 5 s);
- lateness: a steady 10 firings per second for 20 s; lateness is when the
  fake received the message minus when the reminder was due (p99 <= 1 s);
- burst: 1,000 reminders due at the same moment, each to its own chat: time
  until the last one arrived, all delivered, zero 429s.

Bounded: every phase has a time limit and the run stops by itself."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from bench.harness import percentile
from bot.app import Arium
from bot.storage.db import Database
from bot.storage.models import Reminder, User
from tests.conftest import fake_settings
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram

FIRST_USER = 1_000_000
REMINDERS_PER_USER = 10
TELEGRAM_LIMIT = (30, 1.0)


@dataclass(frozen=True)
class Line:
    measure: str
    value: str
    budget: str = "-"
    result: str = "info"


def _user_rows(first: int, count: int, now: datetime) -> list[dict[str, object]]:
    return [
        {"id": first + i, "first_name": "Bench", "language": "en", "timezone": "Europe/Berlin",
         "role": "user", "created_at": now, "last_seen_at": now}
        for i in range(count)
    ]


def _reminder_row(user_id: int, due: datetime, now: datetime, text: str) -> dict[str, object]:
    return {"user_id": user_id, "chat_id": user_id, "text": text, "timezone": "Europe/Berlin",
            "status": "active", "next_fire_at": due, "revision": 0, "attempts": 0, "fire_count": 0,
            "created_at": now, "updated_at": now}


async def _insert(db: Database, model: type, rows: list[dict[str, object]], chunk: int = 5000) -> None:
    for start in range(0, len(rows), chunk):
        async with db.session() as s:
            await s.execute(insert(model), rows[start : start + chunk])


async def seed_stored(url: str, stored: int) -> float:
    """100,000 reminders spread over the next 30 days (a few fall within the horizon)."""
    db = Database(url)
    await db.migrate()
    now = datetime.now(timezone.utc)
    users = max(1, stored // REMINDERS_PER_USER)
    started = time.monotonic()
    await _insert(db, User, _user_rows(FIRST_USER, users, now))
    rng = random.Random(5)
    rows = [
        _reminder_row(FIRST_USER + i % users, now + timedelta(minutes=30, seconds=rng.uniform(0, 30 * 86400)), now, f"stored {i}")
        for i in range(stored)
    ]
    await _insert(db, Reminder, rows)
    await db.dispose()
    return time.monotonic() - started


def delivered_at(tg: FakeTelegram, prefix: str) -> dict[str, float]:
    """Text -> when the fake accepted it (monotonic), for messages starting with prefix."""
    found: dict[str, float] = {}
    for call in tg.calls_of("sendMessage"):
        text = str(call.params.get("text", ""))
        if call.status == 200 and text.startswith(prefix):
            found.setdefault(text, call.at)
    return found


async def wait_until(check, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def steady_lateness(app: Arium, tg: FakeTelegram, rate: int, seconds: int, first_user: int) -> tuple[list[float], int]:
    count = rate * seconds
    now_wall, now_mono = datetime.now(timezone.utc), time.monotonic()
    lead = 5.0  # the first one is due 5 s from now
    await _insert(app.db, User, _user_rows(first_user, count, now_wall))
    due_mono: dict[str, float] = {}
    rows = []
    for i in range(count):
        offset = lead + i / rate
        text = f"steady {i}"
        rows.append(_reminder_row(first_user + i, now_wall + timedelta(seconds=offset), now_wall, text))
        due_mono[f"⏰ {text}"] = now_mono + offset
    await _insert(app.db, Reminder, rows)
    # The periodic refill would arm them within a minute; the benchmark does not wait for it.
    await app.reminder_scheduler.refill()
    await wait_until(lambda: len(delivered_at(tg, "⏰ steady")) >= count, lead + seconds + 30)
    arrived = delivered_at(tg, "⏰ steady")
    return [arrived[text] - due for text, due in due_mono.items() if text in arrived], count - len(arrived)


async def burst(app: Arium, tg: FakeTelegram, size: int, first_user: int) -> tuple[float, int, float]:
    now_wall, now_mono = datetime.now(timezone.utc), time.monotonic()
    lead = 3.0
    await _insert(app.db, User, _user_rows(first_user, size, now_wall))
    due = now_wall + timedelta(seconds=lead)
    await _insert(app.db, Reminder, [_reminder_row(first_user + i, due, now_wall, f"burst {i}") for i in range(size)])
    await app.reminder_scheduler.refill()
    await wait_until(lambda: len(delivered_at(tg, "⏰ burst")) >= size, lead + size / 20 + 30)
    arrived = sorted(delivered_at(tg, "⏰ burst").values())
    if not arrived:
        return float("inf"), size, 0.0
    span = arrived[-1] - (now_mono + lead)
    rate = (len(arrived) - 1) / (arrived[-1] - arrived[0]) if len(arrived) > 1 else 0.0
    return span, size - len(arrived), rate


async def run(stored: int, burst_size: int, steady_rate: int, steady_seconds: int) -> list[Line]:
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="arium-bench-reminders-") as tmp:
        async with FakeTelegram() as tg, FakeModelServer() as model:
            settings = fake_settings(Path(tmp) / "data", tg, model, bot_timezone="Europe/Berlin")
            seeded = await seed_stored(settings.effective_database_url, stored)
            lines.append(Line("seeding the table (not part of the budget)", f"{seeded:.1f} s for {stored:,} reminders"))
            tg.rate_limit = TELEGRAM_LIMIT
            app = Arium(settings)
            started = time.monotonic()
            await app.start()
            start_seconds = time.monotonic() - started
            try:
                lines.append(Line(f"start with {stored:,} stored reminders", f"{start_seconds:.2f} s", "<= 5 s", _ok(start_seconds <= 5)))
                lines.append(Line("timers armed at start (horizon 10 min)", str(app.reminder_scheduler.health()["armed"])))
                late, missing = await steady_lateness(app, tg, steady_rate, steady_seconds, FIRST_USER + 5_000_000)
                p50, p99 = percentile(late, 50), percentile(late, 99)
                lines.append(Line(f"lateness p50, steady {steady_rate}/s for {steady_seconds} s", f"{p50 * 1000:.0f} ms"))
                lines.append(Line(f"lateness p99, steady {steady_rate}/s for {steady_seconds} s", f"{p99 * 1000:.0f} ms", "<= 1000 ms", _ok(p99 <= 1.0 and not missing)))
                span, lost, rate = await burst(app, tg, burst_size, FIRST_USER + 6_000_000)
                lines.append(Line(f"{burst_size:,} due at once: last delivered after", f"{span:.1f} s"))
                lines.append(Line(f"{burst_size:,} due at once: delivered", f"{burst_size - lost:,} ({rate:.1f} msg/s)", "all", _ok(lost == 0)))
                lines.append(Line("429 answers from the fake (limit 30/s)", str(tg.too_many_requests), "0", _ok(tg.too_many_requests == 0)))
            finally:
                await app.stop()
    return lines


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def table(lines: list[Line]) -> str:
    out = ["| P5 measure | value | budget | result |", "| --- | --- | --- | --- |"]
    out += [f"| {line.measure} | {line.value} | {line.budget} | {line.result} |" for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reminders", description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=100_000, help="reminders in the table (default 100,000)")
    parser.add_argument("--burst", type=int, default=1000, help="reminders due at the same moment (default 1,000)")
    parser.add_argument("--steady-rate", type=int, default=10, help="firings per second in the steady phase")
    parser.add_argument("--steady-seconds", type=int, default=20, help="length of the steady phase")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        lines = asyncio.run(asyncio.wait_for(run(args.stored, args.burst, args.steady_rate, args.steady_seconds), 170))
    except TimeoutError:
        lines = [Line("finished", "timed out after 170 s", "-", "FAIL")]
    print(table(lines))


if __name__ == "__main__":
    main()
