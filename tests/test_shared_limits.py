"""Telegram's flood limits shared through Redis (scaled mode): several
limiters, in one process or in two, sending at once to the fake Bot API with
its limit enforcement on, never get a 429.

Against the real Redis on 127.0.0.1:6379 (skipped when it does not answer);
every test has its own key prefix, so parallel runs never share windows.
Limits are lowered (10/s overall, groups 3 per 2 s) to keep each test to a
few seconds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import sys
import uuid
from collections.abc import Iterable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter, BaseRateLimiter, ExtBot
from telegram.request import HTTPXRequest

from bot.channels.telegram.shared_limits import (
    FloodLimits,
    SharedRateLimiter,
    limited_chat,
    limits_storage_url,
    telegram_rate_limiter,
)
from tests.fakes.telegram_server import FakeTelegram, TelegramLimits
from tests.limits import WAIT_LIMIT

REDIS = ("127.0.0.1", 6379)
LIMITS = FloodLimits(overall="10/second", private_chat="1/second", group="3 per 2 seconds")
FAKE_LIMITS = TelegramLimits(overall=10, private=1, group=3, group_period=2.0)
SHARED_CHAT = 777
GROUP = -100500
ROOT = Path(__file__).resolve().parents[1]


def _redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _redis_answers():
        pytest.skip("Redis does not answer PING on 127.0.0.1:6379; the shared limits are tested against a real one")
    return f"async+redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.fixture
def prefix() -> str:
    return f"arium-test-{uuid.uuid4().hex}"


@pytest.fixture
async def limited_tg(tg: FakeTelegram) -> FakeTelegram:
    tg.enforce_limits(FAKE_LIMITS)
    return tg


def _bot(tg: FakeTelegram, limiter: BaseRateLimiter[int] | None) -> ExtBot[int]:
    # A pool as wide as the sends, so the limiter (not the pool) does the pacing.
    request = HTTPXRequest(connection_pool_size=32, pool_timeout=WAIT_LIMIT)
    return ExtBot(tg.token, base_url=tg.base_url, request=request, rate_limiter=limiter)


async def _send_all(bot: ExtBot[int], chats: Iterable[int]) -> None:
    await asyncio.gather(*(bot.send_message(chat, f"message #{n}") for n, chat in enumerate(chats)))


def _most_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    start = most = 0
    for end, at in enumerate(times):
        while times[start] <= at - period:
            start += 1
        most = max(most, end - start + 1)
    return most


def _assert_within_fake_limits(tg: FakeTelegram) -> None:
    """Zero 429s, and the accepted sends, counted again here, fit every window."""
    assert tg.limit_refusals == 0, f"{tg.limit_refusals} sends were refused with 429"
    accepted = [call for call in tg.calls if call.method == "sendMessage" and call.status == 200]
    window = FAKE_LIMITS.overall_period - FAKE_LIMITS.slack
    assert _most_in_any_window([c.at for c in accepted], window) <= FAKE_LIMITS.overall
    for chat, most, period in ((SHARED_CHAT, FAKE_LIMITS.private, FAKE_LIMITS.private_period), (GROUP, FAKE_LIMITS.group, FAKE_LIMITS.group_period)):
        times = [c.at for c in accepted if int(c.params["chat_id"]) == chat]
        assert _most_in_any_window(times, period - FAKE_LIMITS.slack) <= most


def _chats(first: int, count: int) -> list[int]:
    """``count`` private chats of their own, plus the shared private chat and group."""
    return [GROUP, GROUP, SHARED_CHAT, *range(first, first + count)]


# ------------------------------------------------------------------ sharing


async def test_two_limiters_sending_at_once_stay_within_the_shared_limits(
    limited_tg: FakeTelegram, redis_url: str, prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        bots = [
            await stack.enter_async_context(_bot(limited_tg, SharedRateLimiter(redis_url, key_prefix=prefix, limits=LIMITS)))
            for _ in range(2)
        ]
        await asyncio.gather(_send_all(bots[0], _chats(1, 5)), _send_all(bots[1], _chats(101, 5)))

    _assert_within_fake_limits(limited_tg)
    assert len(limited_tg.messages(SHARED_CHAT)) == 2
    assert len(limited_tg.messages(GROUP)) == 4
    assert sum(len(limited_tg.messages(c)) for c in [*range(1, 6), *range(101, 106)]) == 10


async def test_without_a_shared_limiter_the_fake_refuses_the_same_sends(limited_tg: FakeTelegram) -> None:
    # The control for the test above: the same burst, unpaced, does hit the limits.
    async with _bot(limited_tg, None) as first, _bot(limited_tg, None) as second:
        results = await asyncio.gather(
            _send_all(first, _chats(1, 5)), _send_all(second, _chats(101, 5)), return_exceptions=True
        )
    assert any(isinstance(result, RetryAfter) for result in results)
    assert limited_tg.limit_refusals > 0


async def test_a_separate_process_shares_the_limits(limited_tg: FakeTelegram, redis_url: str, prefix: str) -> None:
    other_chats = [*range(201, 211), SHARED_CHAT]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.shared_limits_sender",
        limited_tg.url, limited_tg.token, redis_url, prefix, json.dumps(dataclasses.asdict(LIMITS)),
        *map(str, other_chats),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert await asyncio.wait_for(child.stdout.readline(), WAIT_LIMIT) == b"ready\n"
        async with _bot(limited_tg, SharedRateLimiter(redis_url, key_prefix=prefix, limits=LIMITS)) as bot:
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            await _send_all(bot, [*range(1, 11), SHARED_CHAT])
        out, _ = await asyncio.wait_for(child.communicate(), WAIT_LIMIT)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    assert child.returncode == 0 and out.strip() == b"sent 11"
    _assert_within_fake_limits(limited_tg)
    assert len(limited_tg.messages(SHARED_CHAT)) == 2
    assert all(len(limited_tg.messages(chat)) == 1 for chat in [*range(1, 11), *range(201, 211)])


# ------------------------------------------------------------------ Telegram's 429


async def test_a_429_from_telegram_is_retried_after_its_retry_after(
    tg: FakeTelegram, redis_url: str, prefix: str
) -> None:
    tg.fail_next("sendMessage", status=429, retry_after=1)
    async with _bot(tg, SharedRateLimiter(redis_url, key_prefix=prefix, limits=LIMITS)) as bot:
        await bot.send_message(5, "after the flood")

    sends = [call for call in tg.calls if call.method == "sendMessage"]
    assert [call.status for call in sends] == [429, 200]
    assert sends[1].at - sends[0].at >= 0.9  # not sooner than Telegram said (1 s)
    assert [m.text for m in tg.messages(5)] == ["after the flood"]


async def test_flood_control_past_the_retries_reaches_the_caller(
    tg: FakeTelegram, redis_url: str, prefix: str
) -> None:
    tg.fail_next("sendMessage", status=429, retry_after=1, times=3)
    limiter = SharedRateLimiter(redis_url, key_prefix=prefix, limits=LIMITS, max_retries=0)
    async with _bot(tg, limiter) as bot:
        with pytest.raises(RetryAfter):
            await bot.send_message(5, "no retry")
        with pytest.raises(RetryAfter):
            await bot.send_message(6, "one retry for this call", rate_limit_args=1)

    assert [c.params["chat_id"] for c in tg.calls if c.method == "sendMessage"] == [5, 6, 6]
    assert tg.messages(5) == [] and tg.messages(6) == []


# ------------------------------------------------------------------ Redis down


async def test_with_redis_down_sends_go_on_paced_by_the_process(
    limited_tg: FakeTelegram, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limiter = SharedRateLimiter(f"async+redis://127.0.0.1:{port}/0", key_prefix=prefix, limits=LIMITS)
    caplog.set_level(logging.INFO, logger="bot.channels.telegram.shared_limits")
    async with _bot(limited_tg, limiter) as bot:
        await _send_all(bot, _chats(1, 14))

    _assert_within_fake_limits(limited_tg)
    assert len(limited_tg.messages(GROUP)) == 2 and len(limited_tg.messages(SHARED_CHAT)) == 1
    assert sum(len(limited_tg.messages(c)) for c in range(1, 15)) == 14
    outage = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage) == 1, "one warning per outage, not one per send"


# ------------------------------------------------------------------ what is limited, building


@pytest.mark.parametrize(
    ("endpoint", "data", "chat"),
    [
        ("sendMessage", {"chat_id": 5, "text": "x"}, 5),
        ("sendPhoto", {"chat_id": "-100123"}, -100123),
        ("editMessageText", {"chat_id": -42, "message_id": 1}, -42),
        ("copyMessage", {"chat_id": "@channel"}, "@channel"),
        ("sendMessageDraft", {"chat_id": 5, "draft_id": 1}, None),
        ("sendChatAction", {"chat_id": 5, "action": "typing"}, None),
        ("editMessageText", {"inline_message_id": "abc"}, None),
        ("getMe", {}, None),
        ("getChat", {"chat_id": 5}, None),
        ("deleteMessage", {"chat_id": 5, "message_id": 1}, None),
    ],
)
def test_only_sends_into_a_chat_are_counted(endpoint: str, data: dict[str, object], chat: int | str | None) -> None:
    assert limited_chat(endpoint, data) == chat


def test_the_builder_shares_limits_only_when_redis_is_configured() -> None:
    assert isinstance(telegram_rate_limiter(None, redis_prefix="arium", token="123:SECRET"), AIORateLimiter)
    shared = telegram_rate_limiter("redis://h:6379/0", redis_prefix="arium", token="123:SECRET")
    assert isinstance(shared, SharedRateLimiter)
    assert limits_storage_url("redis://h:6379/0") == "async+redis://h:6379/0"
    assert limits_storage_url("rediss://h:6380") == "async+rediss://h:6380"
    assert limits_storage_url("unix:///run/redis.sock") == "async+redis+unix:///run/redis.sock"


async def test_keys_are_per_bot_under_the_prefix_and_never_hold_the_token(redis_url: str, prefix: str) -> None:
    import coredis

    async with FakeTelegram(token="987:TOPSECRET") as tg:
        limiter = telegram_rate_limiter(redis_url, redis_prefix=prefix, token=tg.token)
        async with _bot(tg, limiter) as bot:
            await bot.send_message(5, "hi")
    client = coredis.Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    assert keys and all(key.startswith(f"{prefix}:telegram:987:") for key in keys)
    assert not any("TOPSECRET" in key for key in keys)

