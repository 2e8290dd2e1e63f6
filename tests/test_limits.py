"""Per-user limits: the token bucket, the notice memory and the daily budget
maths as units (with hand-moved clocks), then end to end against the fakes:
the "slow down" warning, the budget message with its reset time, per-user
overrides and the admin exemption."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timezone

import pytest

from bot.gates.chain import GateChain, GateRequest, NoticeLimiter, Verdict
from bot.gates.limits import (
    DailyBudget,
    QuotaCheck,
    RateLimitCheck,
    RateLimiter,
    effective_budget,
    format_reset,
    format_tokens,
    next_reset,
    pending_tokens,
)
from bot.runtime.events import TurnFinished
from bot.i18n import t
from bot.storage.admin import UsageRepository
from bot.storage.db import Database
from bot.storage.models import User
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.contexts import context

ADMIN = 500
USER = 1001


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the token bucket -------------------------------------------------------------


def test_bucket_allows_the_burst_then_refuses_with_the_wait_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)  # one token per 10 s
    assert [limiter.hit(1).allowed for _ in range(3)] == [True, True, True]
    refused = limiter.hit(1)
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0) and refused.retry_seconds == 10
    clock.now += 4
    assert limiter.hit(1).retry_after == pytest.approx(6.0)
    clock.now += 6
    assert limiter.hit(1).allowed  # one token refilled
    assert not limiter.hit(1).allowed
    assert limiter.refused == 3


def test_bucket_refills_at_the_rate_and_never_above_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    limiter.hit(1), limiter.hit(1)
    clock.now += 3600  # an hour idle refills to the burst, not to 3600 tokens
    assert [limiter.hit(1).allowed for _ in range(3)] == [True, True, False]


def test_buckets_are_per_user() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=1, burst=1, clock=clock)
    assert limiter.hit(1).allowed and not limiter.hit(1).allowed
    assert limiter.hit(2).allowed  # another user's bucket is untouched


def test_one_warning_per_window_however_many_messages_are_refused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, warn_window=60, clock=clock)
    assert limiter.hit(1).allowed
    warnings = 0
    for _ in range(100):  # a flood at 10 messages per second for 10 s
        clock.now += 0.1
        decision = limiter.hit(1)
        warnings += decision.warn
        assert not decision.allowed or not decision.warn
    assert warnings == 1
    clock.now += 60  # the next window may warn again
    limiter.hit(1)  # a refilled token is spent
    assert limiter.hit(1).warn


def test_disabled_limiter_allows_everything_and_keeps_nothing() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.hit(1).allowed for _ in range(1000)) and len(limiter) == 0


def test_bucket_memory_stays_bounded_and_idle_users_are_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=5, max_users=100, clock=clock)
    for user in range(1000):
        limiter.hit(user)
    assert len(limiter) == 100  # the cap holds under a flood of fresh accounts
    clock.now += 10  # every bucket refilled: same as no bucket at all
    for user in range(2000, 2010):
        limiter.hit(user)
    assert len(limiter) < 100, "refilled buckets should be dropped as users come and go"


def test_bad_limiter_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        RateLimiter(per_minute=-1, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(per_minute=1, burst=0)


# --- notices ------------------------------------------------------------------------


def test_notice_is_given_once_per_interval_per_key_and_memory_is_bounded() -> None:
    clock = FakeClock()
    notices = NoticeLimiter(60, max_keys=3, clock=clock)
    assert notices.should_notify("a") and not notices.should_notify("a")
    assert notices.should_notify("b")
    clock.now += 61
    assert notices.should_notify("a")
    notices.forget("a")
    assert notices.should_notify("a")
    for key in "cdefg":
        notices.should_notify(key)
    assert len(notices) <= 3


# --- budget maths -----------------------------------------------------------------


def test_budget_resets_at_the_next_utc_midnight() -> None:
    assert next_reset(datetime(2026, 3, 7, 23, 59, tzinfo=timezone.utc)) == datetime(2026, 3, 8, tzinfo=timezone.utc)
    assert next_reset(datetime(2026, 3, 8, 0, 0, tzinfo=timezone.utc)) == datetime(2026, 3, 9, tzinfo=timezone.utc)
    # 01:30 in Berlin (UTC+1) is still the previous UTC day.
    berlin = datetime(2026, 3, 8, 0, 30, tzinfo=timezone.utc).astimezone()
    assert next_reset(berlin) == datetime(2026, 3, 9, tzinfo=timezone.utc)


def test_reset_is_shown_on_the_users_wall_clock() -> None:
    midnight = datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert format_reset(midnight, "Asia/Tokyo") == "2026-07-01 09:00"
    assert format_reset(midnight, "America/New_York") == "2026-06-30 20:00"  # summer time, UTC-4
    assert format_reset(datetime(2026, 1, 1, tzinfo=timezone.utc), "America/New_York") == "2025-12-31 19:00"


def test_override_wins_over_the_default_and_zero_means_unlimited() -> None:
    assert effective_budget(None, 5000) == 5000
    assert effective_budget(100, 5000) == 100
    assert effective_budget(0, 5000) == 0
    assert effective_budget(None, 0) == 0


def test_pending_tokens_count_only_this_user_today() -> None:
    day = date(2026, 3, 8)
    at = datetime(2026, 3, 8, 12, tzinfo=timezone.utc)
    events = [
        TurnFinished(1, 1, "m", "complete", 10, 5, at),
        TurnFinished(1, 1, "m", "complete", 100, 50, datetime(2026, 3, 7, 23, 59, tzinfo=timezone.utc)),
        TurnFinished(2, 2, "m", "complete", 1000, 1000, at),
        TurnFinished(1, -5, None, "failed", 0, 0, at),
        TurnFinished(1, -5, "m", "partial", 7, 3, at),
    ]
    assert pending_tokens(events, 1, day) == 25


def test_token_counts_are_grouped_for_reading() -> None:
    assert format_tokens(1234567, "en") == "1,234,567"
    assert format_tokens(1234567, "ru") == "1\u00a0234\u00a0567"


async def test_budget_adds_stored_and_not_yet_written_usage(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    try:
        usage = UsageRepository(db)
        now = datetime(2026, 3, 8, 18, tzinfo=timezone.utc)
        await usage.add_turns([TurnFinished(1, 1, "m", "complete", 300, 200, now)])
        held: list[TurnFinished] = [TurnFinished(1, 1, "m", "complete", 40, 60, now)]
        budget = DailyBudget(usage.tokens_on, lambda: held, default=600, now=lambda: now)
        state = await budget.state(1, None)
        assert (state.used, state.limit, state.exhausted) == (600, 600, True)
        assert state.resets_at == datetime(2026, 3, 9, tzinfo=timezone.utc)
        assert not (await budget.state(1, 10_000)).exhausted  # a per-user override
        assert await budget.limited(1, 0) is None  # unlimited: no database read needed
        held.clear()
        assert (await budget.state(1, None)).used == 500
        assert (await budget.state(2, None)).used == 0
    finally:
        await db.dispose()


# --- the gates --------------------------------------------------------------------


async def test_quota_applies_only_to_messages_for_the_model_and_not_to_admins() -> None:
    used = {"tokens": 0}

    async def tokens_on(user_id: int, day: date) -> int:
        return used["tokens"]

    now = datetime(2026, 3, 8, 18, tzinfo=timezone.utc)
    none: Sequence[TurnFinished] = ()
    gates = GateChain([QuotaCheck(DailyBudget(tokens_on, lambda: none, default=100, now=lambda: now))])
    user = context(language="en", timezone="Asia/Tokyo")
    assert (await gates.check(GateRequest(user, reaches_model=True))).passed
    used["tokens"] = 100
    refused = await gates.check(GateRequest(user, reaches_model=True))
    assert not refused.passed and refused.refused_by == "quota"
    assert refused.notices == (t("limit_budget_used", "en", limit="100", when="2026-03-09 09:00", zone="Asia/Tokyo"),)
    assert (await gates.check(GateRequest(user, reaches_model=False))).passed  # /help still works
    assert (await gates.check(GateRequest(context(role="admin"), reaches_model=True))).passed
    assert (await gates.check(GateRequest(context(token_budget=0), reaches_model=True))).passed
    assert gates.refusals == {"quota": 1}


async def test_rate_gate_exempts_admins_and_warns_once() -> None:
    clock = FakeClock()
    gates = GateChain([RateLimitCheck(RateLimiter(per_minute=1, burst=1, clock=clock))])
    user = context(language="en")
    results = [await gates.check(GateRequest(user)) for _ in range(4)]
    assert [r.passed for r in results] == [True, False, False, False]
    assert [len(r.notices) for r in results] == [0, 1, 0, 0]
    assert "try again in 60 s" in results[1].notices[0]
    assert all([(await gates.check(GateRequest(context(role="admin")))).passed for _ in range(10)])


async def test_first_refusal_ends_the_chain_and_notices_of_passing_checks_are_kept() -> None:
    calls: list[str] = []

    class Fixed:
        def __init__(self, name: str, verdict: Verdict | None) -> None:
            self.name, self._verdict = name, verdict

        async def check(self, request: GateRequest) -> Verdict | None:
            calls.append(self.name)
            return self._verdict

    chain = GateChain([Fixed("a", None), Fixed("b", Verdict(True, "welcome")), Fixed("c", Verdict(False)), Fixed("d", None)])
    result = await chain.check(GateRequest(context()))
    assert (result.passed, result.notices, result.refused_by) == (False, ("welcome",), "c")
    assert calls == ["a", "b", "c"]


# --- end to end ---------------------------------------------------------------------


async def test_flooder_gets_one_warning_and_the_model_sees_only_the_burst(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_rate_per_minute=1, bot_rate_burst=2, bot_admin_ids=str(ADMIN))
    for i in range(5):
        tg.user_text(f"message {i}", chat_id=USER)
    tg.user_text("/help", chat_id=USER)  # commands count too
    await tg.wait_for(lambda: app.gates.refusals["rate"] == 4)
    texts = [m.text for m in tg.messages(USER)]
    assert texts[:2] == ["echo: message 0", "echo: message 1"]
    assert len(texts) == 3, texts
    warning = texts[2]
    assert "slow down" in warning
    seconds = int(re.search(r"try again in (\d+) s", warning).group(1))  # type: ignore[union-attr]
    assert 1 <= seconds <= 60
    assert len(model.chat_requests()) == 2

    for i in range(4):  # admins are exempt
        tg.user_text(f"admin {i}", chat_id=ADMIN)
    await tg.wait_messages(ADMIN, 4)
    assert [m.text for m in tg.messages(ADMIN)] == [f"echo: admin {i}" for i in range(4)]


async def test_daily_budget_refuses_with_reset_time_allows_overrides_and_exempts_admins(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_daily_tokens=30, bot_admin_ids=str(ADMIN))
    model.script(Reply(text="first answer", usage=(20, 15)))
    tg.user_text("hi", chat_id=USER)
    await tg.wait_messages(USER, 1)
    async with app.db.session() as s:
        (await s.get(User, USER)).timezone = "Asia/Tokyo"  # type: ignore[union-attr]

    tg.user_text("one more question", chat_id=USER)
    [_, refusal] = await tg.wait_messages(USER, 2)
    assert "today's limit of 30 tokens" in refusal.text
    reset = next_reset(datetime.now(timezone.utc))
    assert f"resets at {format_reset(reset, 'Asia/Tokyo')} (Asia/Tokyo)" in refusal.text
    assert format_reset(reset, "Asia/Tokyo").endswith("09:00")
    assert len(model.chat_requests()) == 1, "a message over the budget must not reach the model"
    tg.user_text("/help", chat_id=USER)  # commands spend no tokens and keep working
    help_answer = (await tg.wait_messages(USER, 3))[-1]
    assert "/new" in help_answer.text

    tg.user_text(f"/budget {USER} 1000", chat_id=ADMIN)
    [shown] = await tg.wait_messages(ADMIN, 1)
    assert "daily budget 1,000 tokens (set for this user); used today (UTC): 35" in shown.text
    tg.user_text("and now?", chat_id=USER)
    assert (await tg.wait_messages(USER, 4))[-1].text == "echo: and now?"

    tg.user_text(f"/budget {USER} default", chat_id=ADMIN)
    assert "daily budget 30 tokens (the default)" in (await tg.wait_messages(ADMIN, 2))[-1].text
    tg.user_text("still there?", chat_id=USER)
    assert "today's limit" in (await tg.wait_messages(USER, 5))[-1].text
    tg.user_text(f"/budget {USER} unlimited", chat_id=ADMIN)
    assert "unlimited (set for this user)" in (await tg.wait_messages(ADMIN, 3))[-1].text
    tg.user_text("unlimited now", chat_id=USER)
    assert (await tg.wait_messages(USER, 6))[-1].text == "echo: unlimited now"

    model.script(Reply(text="admin one", usage=(20, 15)), Reply(text="admin two", usage=(20, 15)))
    tg.user_text("first", chat_id=ADMIN)
    tg.user_text("second", chat_id=ADMIN)
    answers = await tg.wait_messages(ADMIN, 5)
    assert [m.text for m in answers[-2:]] == ["admin one", "admin two"]
    tg.user_text(f"/budget {ADMIN}", chat_id=ADMIN)
    assert "admins are exempt" in (await tg.wait_messages(ADMIN, 6))[-1].text
