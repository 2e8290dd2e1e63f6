"""What identities cost a message: the user lookup every message makes,
by the user's own id (one primary-key read, as before identities) and
through the person's Telegram identity (a join of identities and users,
as every Telegram and console message does now), interleaved in one run
over the same SQLite database holding N users.

    .venv/bin/python -m bench.identity_lookup [--users 10000] [--lookups 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.harness import percentile
from bot.storage.db import Database
from bot.storage.repositories import UserProfile, UserRepository


def role(stored: str | None) -> str:
    return "user"


async def seed(users: UserRepository, count: int) -> None:
    # Through the real first-contact path, so each user has its identity row.
    for user_id in range(1, count + 1):
        await users.visit(UserProfile(user_id, f"User{user_id}"), role, channel="telegram")


async def measure(count: int, lookups: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        await db.migrate()
        users = UserRepository(db, "UTC")
        await seed(users, count)
        by_id: list[float] = []
        by_identity: list[float] = []
        for _ in range(lookups):
            profile = UserProfile(random.randint(1, count), "")
            pair = [(None, by_id), ("telegram", by_identity)]
            random.shuffle(pair)  # interleaved, in random order, so drift hits both alike
            for channel, samples in pair:
                started = time.perf_counter()
                found = await users.visit(profile, role, channel=channel)
                samples.append(time.perf_counter() - started)
                assert found.id == profile.id
        await db.dispose()
    print(f"identity lookup, {count} users, {lookups} lookups each, {date.today()}")
    print("| lookup | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    for name, samples in (("by user id (before)", by_id), ("by Telegram identity (now)", by_identity)):
        print(f"| {name} | {percentile(samples, 50) * 1000:.3f} | {percentile(samples, 99) * 1000:.3f} |")
    ratio = percentile(by_identity, 50) / percentile(by_id, 50)
    print(f"| ratio of p50 | {ratio:.2f}x | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(measure(args.users, args.lookups))


if __name__ == "__main__":
    main()
