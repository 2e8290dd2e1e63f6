"""What a new chat's first turn writes before its model request, and how
those writes queue when many new chats arrive at once (P2's bottleneck on
SQLite: one writer at a time).

    .venv/bin/python -m bench.first_contact        # a few seconds

Per first turn: ``UserRepository.visit`` (the user and their Telegram
identity) and ``MessageRepository.start_turn`` (the chat, its conversation,
the pending user message), against SQLite in a temp dir: first one chat at
a time, then N at once.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from bench.harness import percentile
from bot.storage.db import Database
from bot.storage.repositories import MessageRepository, UserProfile, UserRepository


async def first_turn(users: UserRepository, messages: MessageRepository, chat_id: int) -> tuple[float, float]:
    start = time.perf_counter()
    await users.visit(UserProfile(chat_id, "New"), lambda stored: "user", channel="telegram")
    visited = time.perf_counter()
    await messages.start_turn(
        chat_id=chat_id, chat_type="private", chat_title=None, user_id=chat_id, text="hello there",
        tokens=3, request_id=f"r{chat_id}", history_tokens=4000,
    )
    return visited - start, time.perf_counter() - visited


async def run(sequential: int, burst: int) -> None:
    with tempfile.TemporaryDirectory(prefix="arium-bench-first-contact-") as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await db.migrate()
        users, messages = UserRepository(db, "UTC"), MessageRepository(db)
        alone = [await first_turn(users, messages, 1_000 + i) for i in range(sequential)]
        start = time.perf_counter()
        together = await asyncio.gather(*(first_turn(users, messages, 100_000 + i) for i in range(burst)))
        burst_wall = time.perf_counter() - start
        await db.dispose()
    print("| measure | value |\n| --- | --- |")
    print(f"| visit, one chat at a time (p50) | {percentile([v for v, _ in alone], 50) * 1000:.2f} ms |")
    print(f"| start_turn, one chat at a time (p50) | {percentile([s for _, s in alone], 50) * 1000:.2f} ms |")
    print(f"| {burst} first turns at once: all stored | {burst_wall:.2f} s |")
    print(f"| {burst} at once: one chat's wait, p50 / max | {percentile([v + s for v, s in together], 50):.2f} s / "
          f"{max(v + s for v, s in together):.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.sequential, args.burst))


if __name__ == "__main__":
    main()
