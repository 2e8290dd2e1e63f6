"""Another worker, for tests/test_shared_limits.py: a separate OS process
that sends through its own SharedRateLimiter, as a second worker of the
scaled mode would.

    python -m tests.shared_limits_sender API_URL TOKEN STORAGE_URL PREFIX LIMITS_JSON CHAT_ID...

Prints "ready" once its bot is initialized, waits for one line on stdin (so
both sides start at once), sends one message to each chat id, all at once,
and prints "sent N"."""

from __future__ import annotations

import asyncio
import json
import sys

from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.channels.telegram.shared_limits import FloodLimits, SharedRateLimiter


async def main(argv: list[str]) -> int:
    api_url, token, storage_url, prefix, limits_json, *chats = argv
    limiter = SharedRateLimiter(storage_url, key_prefix=prefix, limits=FloodLimits(**json.loads(limits_json)))
    bot = ExtBot(
        token,
        base_url=f"{api_url}/bot",
        request=HTTPXRequest(connection_pool_size=len(chats) + 1, pool_timeout=30.0),
        rate_limiter=limiter,
    )
    async with bot:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(bot.send_message(int(chat), f"from the other process #{n}") for n, chat in enumerate(chats)))
    print(f"sent {len(chats)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
