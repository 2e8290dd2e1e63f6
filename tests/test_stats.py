"""/stats and /users: prices and cost, the report's numbers over seeded data
(SQLite and PostgreSQL), the PNG chart, the fake's sendPhoto, and both
commands end to end against the fake Bot API and model server."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from telegram import Bot
from telegram.error import BadRequest

from bot.admin.charts import CHART_HEIGHT, CHART_WIDTH, ChartLabels, render_usage_chart
from bot.admin.stats import (
    STATS_DAYS,
    AdminStats,
    ModelPrice,
    UserDirectory,
    endpoint_label,
    fill_days,
    price_for,
    prices_from,
    split_usage_model,
)
from bot.context import Redactor, strip_url_secrets
from bot.app import Arium
from bot.channels.telegram.stats_handlers import join_messages, parse_page_data
from bot.errors import ConfigError
from bot.runtime.events import TurnFinished
from bot.reminders.clock import ShiftedClock
from bot.settings import Settings, load_settings
from bot.storage.admin import DayUsage, UsageRepository
from bot.storage.db import Database
from bot.storage.models import Reminder, User
from bot.storage.reminders import ReminderRepository
from bot.storage.tool_events import ToolEventRecord, ToolEventRepository
from bot.memory.embedder import Embedder
from tests.conftest import BotFactory, eventually, fake_settings
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.admin import ADMIN, MINI, MISTRAL, PRICES, command, png_size

STRANGER = 1002
FAKE_KEY = "sk-fake-SECRET-key-4242"


# --- Prices, model names, secrets -------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "tier", "model"),
    [
        (MINI, "openai:gpt-4o-mini", "openai:gpt-4o-mini"),
        (MISTRAL, "primary", "mistral:mistral-small-latest"),
        ("fast/openai:meta-llama/llama-3.1-8b", "fast", "openai:meta-llama/llama-3.1-8b"),
        ("openai:meta-llama/llama-3/openai:meta-llama/llama-3", "openai:meta-llama/llama-3", "openai:meta-llama/llama-3"),
        ("openai:gpt-4o", None, "openai:gpt-4o"),
        ("no-provider", None, "no-provider"),
    ],
)
def test_usage_model_strings_split_into_tier_and_model(stored: str, tier: str | None, model: str) -> None:
    assert split_usage_model(stored) == (tier, model)


def test_prices_match_the_model_that_answered_whatever_its_tier() -> None:
    prices = prices_from({"openai:gpt-4o-mini": (0.15, 0.6), "openai:meta-llama/llama-3": (0.05, 0.08)})
    assert price_for(MINI, prices) == ModelPrice(0.15, 0.6)
    assert price_for("cheap/openai:gpt-4o-mini", prices) == ModelPrice(0.15, 0.6)
    assert price_for("openai:meta-llama/llama-3/openai:meta-llama/llama-3", prices) == ModelPrice(0.05, 0.08)
    assert price_for("x/openai:gpt-4o", prices) is None
    assert price_for("", prices) is None
    assert ModelPrice(0.15, 0.6).cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert ModelPrice(2.5, 10).cost(2000, 500) == pytest.approx(0.01)


def test_model_prices_from_environment_json_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PRICES", "openai:gpt-4o-mini=0.15/0.60, Mistral:mistral-small-latest=0.1/0.3")
    assert Settings(_env_file=None).model_prices == {  # type: ignore[call-arg]
        "openai:gpt-4o-mini": (0.15, 0.6),
        "mistral:mistral-small-latest": (0.1, 0.3),
    }
    monkeypatch.setenv("MODEL_PRICES", '{"openai:gpt-4o": [2.5, 10]}')
    assert Settings(_env_file=None).model_prices == {"openai:gpt-4o": (2.5, 10.0)}  # type: ignore[call-arg]
    monkeypatch.delenv("MODEL_PRICES")
    config = tmp_path / "arium.toml"
    config.write_text('model_prices = {"openai:gpt-4o-mini" = [0.15, 0.60]}\n')
    monkeypatch.setenv("BOT_CONFIG", str(config))
    assert Settings(_env_file=None).model_prices == {"openai:gpt-4o-mini": (0.15, 0.6)}  # type: ignore[call-arg]


def test_example_toml_prices_load(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "arium.example.toml"
    monkeypatch.setenv("BOT_CONFIG", str(example))
    monkeypatch.delenv("BOT_MODELS", raising=False)
    monkeypatch.delenv("MODEL_PRICES", raising=False)
    prices = Settings(_env_file=None, mistral_api_key="mk").model_prices  # type: ignore[call-arg]
    assert prices and all(":" in key for key in prices)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("openai:gpt-4o-mini=0.15", "must look like"),
        ("gpt-4o-mini=0.15/0.6", "mistral:MODEL"),
        ("anthropic:claude=1/2", "mistral:MODEL"),
        ("openai:x=-1/2", "greater than or equal to 0"),
        ("openai:x=inf/2", "finite"),
        ("openai:x=cheap/2", "valid number"),
        ('{"openai:x": [1,', "not valid JSON"),
        ('["openai:x"]', "must map"),
    ],
)
def test_bad_model_prices_are_one_readable_config_error(value: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match="MODEL_PRICES") as info:
        load_settings(_env_file=None, model_prices=value)
    assert re.search(complaint, str(info.value))


def test_endpoint_names_and_urls_lose_credentials_and_queries() -> None:
    assert endpoint_label("openai:gpt@user:pw@example.com:8443/v1?api_key=k#x") == "openai:gpt@example.com:8443/v1"
    assert endpoint_label("openai:gpt@api.openai.com") == "openai:gpt@api.openai.com"
    assert endpoint_label("mistral:small@host/v1?key=abc") == "mistral:small@host/v1"
    assert strip_url_secrets("see https://u:p@h.example/x?token=1#f and http://a/b") == "see https://h.example/x and http://a/b"
    assert strip_url_secrets("<code>https://h/x?key=1</code> <a href=\"http://u:p@h/\">x</a>") == (
        '<code>https://h/x</code> <a href="http://h/">x</a>'
    )
    redact = Redactor([FAKE_KEY, "short"])  # too short to be a secret worth hiding
    assert redact(f"key {FAKE_KEY}, token 123456789:AAHfakeTokenThatLooksReal_0123456789") == "key ***, token ***"
    assert redact("a short word") == "a short word"


def test_long_answers_split_between_lines_under_the_limit() -> None:
    lines = [f"<b>{n}</b> " + "x" * 90 for n in range(100)]
    chunks = join_messages(lines, limit=1000)
    assert all(len(c) <= 1000 for c in chunks) and len(chunks) > 1
    assert "\n".join(chunks).split("\n") == lines


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ("usr:0:", (0, "")),
        ("usr:12:ann", (12, "ann")),
        ("usr:1:a:b", (1, "a:b")),
        ("usr:x:", None),
        ("usr:-1:", None),
        ("usr:1234567:", None),
        ("usr:1", None),
        ("usr:1:" + "я" * 21, None),  # 42 bytes: more than a real button can carry
        ("mem:page:1", None),
    ],
)
def test_page_buttons_parse_strictly(data: str, parsed: tuple[int, str] | None) -> None:
    assert parse_page_data(data) == parsed


# --- The chart ------------------------------------------------------------------------


def test_chart_is_a_png_of_the_expected_size_with_bars() -> None:
    from matplotlib import image

    first = date(2025, 3, 1)
    days = fill_days([DayUsage(first + timedelta(days=3), 5, 1200), DayUsage(first + timedelta(days=29), 2, 90_000)],
                     first, first + timedelta(days=29))
    assert len(days) == 30 and days[0] == DayUsage(first, 0, 0) and days[3].turns == 5
    png = render_usage_chart(days, ChartLabels("Ходы и токены", "Ходы", "Токены"))
    assert png_size(png) == (CHART_WIDTH, CHART_HEIGHT)
    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (CHART_HEIGHT, CHART_WIDTH)
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::97]}) > 3, "something is drawn"

    empty = render_usage_chart(fill_days([], first, first + timedelta(days=29)), ChartLabels("t", "a", "b"))
    assert png_size(empty) == (CHART_WIDTH, CHART_HEIGHT)


# --- The fake Bot API's sendPhoto, through the real PTB Bot -------------------------------


@pytest.fixture
async def ptb_bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot:
        yield bot


async def test_fake_send_photo_decodes_the_upload_like_telegram(ptb_bot: Bot, tg: FakeTelegram) -> None:
    first = date(2025, 3, 1)
    png = render_usage_chart(fill_days([], first, first + timedelta(days=29)), ChartLabels("t", "a", "b"))
    sent = await ptb_bot.send_photo(ADMIN, png, caption="<b>chart</b>", parse_mode="HTML", filename="c.png")
    sizes = [(p.width, p.height) for p in sent.photo]
    assert sizes[-1] == (CHART_WIDTH, CHART_HEIGHT) and sizes[0] == (90, 52)
    assert sent.caption == "chart"
    stored = tg.messages(ADMIN)[0]
    assert stored.file is not None and stored.file.data == png and stored.photo is not None

    again = await ptb_bot.send_photo(ADMIN, sent.photo[-1].file_id)
    assert [p.width for p in again.photo] == [p.width for p in sent.photo]
    with pytest.raises(BadRequest, match="(?i)image_process_failed"):
        await ptb_bot.send_photo(ADMIN, b"not an image at all", filename="x.png")
    with pytest.raises(BadRequest, match="(?i)image_process_failed"):
        await ptb_bot.send_photo(ADMIN, png[: len(png) // 2], filename="cut.png")
    with pytest.raises(BadRequest, match="(?i)photo_invalid_dimensions"):
        await ptb_bot.send_photo(ADMIN, _solid_png(2100, 100), filename="strip.png")
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await ptb_bot.send_photo(ADMIN, "AgACAgNOSUCHFILE")


def _solid_png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


# --- The report over seeded data (SQLite and PostgreSQL) ---------------------------------

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def user_row(user_id: int, seen: datetime, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": user_id, "first_name": f"U{user_id}", "last_name": None, "username": None, "language": "en",
        "timezone": "UTC", "role": "user", "created_at": seen, "last_seen_at": seen, "allowed": False, "active": True,
    }
    values.update(extra)
    return values


def turn(user_id: int, model: str | None, at: datetime, tokens_in: int = 0, tokens_out: int = 0, status: str = "complete") -> TurnFinished:
    return TurnFinished(user_id, user_id, model, status, tokens_in, tokens_out, at=at)


def tool(name: str, status: str, ms: int) -> ToolEventRecord:
    return ToolEventRecord(tool=name, status=status, duration_ms=ms, user_id=1, chat_id=1)


def reminder_row(user_id: int, status: str, fire_at: datetime | None) -> dict[str, Any]:
    return {
        "user_id": user_id, "chat_id": user_id, "text": "call mom", "timezone": "UTC", "rule": None,
        "status": status, "next_fire_at": fire_at, "created_at": NOW, "updated_at": NOW,
    }


class ChainHealth:
    """The model service's health() as the chain reports it (a seam fake)."""

    def __init__(self, endpoints: list[dict[str, object]]) -> None:
        self.endpoints = endpoints

    def health(self) -> list[dict[str, object]]:
        return self.endpoints


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.dispose()


async def seed_report_data(db: Database) -> None:
    async with db.session() as s:
        await s.execute(insert(User), [
            user_row(1, NOW - timedelta(hours=1), role="admin"),
            user_row(2, NOW - timedelta(days=3), role="banned"),
            user_row(3, NOW - timedelta(days=20), active=False),
            user_row(4, day_start(TODAY) + timedelta(minutes=30)),
            user_row(5, day_start(TODAY - timedelta(days=6))),  # the first moment of the 7-day window
            user_row(6, day_start(TODAY - timedelta(days=6)) - timedelta(seconds=1)),  # just before it
        ])
        await s.execute(insert(Reminder), [
            reminder_row(1, "active", NOW - timedelta(hours=1)),  # overdue
            reminder_row(1, "active", NOW + timedelta(days=1)),
            reminder_row(4, "active", NOW + timedelta(minutes=5)),
            reminder_row(4, "paused", NOW + timedelta(days=2)),
            reminder_row(4, "cancelled", None),
        ])
    await UsageRepository(db).add_turns([
        turn(1, MINI, NOW - timedelta(hours=2), 1000, 500),
        turn(1, MINI, NOW - timedelta(hours=1), 1000, 500),
        turn(4, None, NOW - timedelta(minutes=5), status="failed"),
        turn(2, MISTRAL, NOW - timedelta(days=3), 2000, 1000),
        turn(3, MINI, NOW - timedelta(days=10), 4000, 2000),
        turn(1, MINI, day_start(TODAY - timedelta(days=STATS_DAYS - 1)), 100, 100),  # first day of the window
        turn(1, MINI, day_start(TODAY - timedelta(days=STATS_DAYS - 1)) - timedelta(seconds=1), 9999, 9999),
    ])
    tools = ToolEventRepository(db)
    await tools.add_many([tool("calculate", "ok", 10), tool("calculate", "timeout", 20000), tool("current_time", "ok", 5)],
                         at=NOW - timedelta(hours=1))
    await tools.add_many([tool("calculate", "ok", 1)], at=NOW - timedelta(days=STATS_DAYS + 1))


@pytest.mark.postgres
async def test_report_counts_the_seeded_data(db: Database) -> None:
    await seed_report_data(db)
    endpoint = {
        "tier": "primary", "endpoint": "openai:gpt-4o-mini@user:pw@example.com/v1?key=k", "model": "openai:gpt-4o-mini",
        "breaker": "open", "in_flight": 0, "requests": 12, "successes": 10, "retries": 1,
        "errors": {"ModelTransientError": 2}, "latency_p50": 0.4, "latency_p95": 1.5,
    }
    stats = AdminStats(
        db, usage=UsageRepository(db), tool_events=ToolEventRepository(db), reminders=ReminderRepository(db),
        models=ChainHealth([endpoint]), prices=prices_from(PRICES), now=lambda: NOW,
    )
    report = await stats.report()

    users = report.users
    assert (users.total, users.active_today, users.active_week, users.banned, users.blocked) == (6, 2, 4, 1, 1)
    assert (report.turns.today, report.turns.week, report.turns.month) == (3, 4, 6)
    assert (report.tokens.today, report.tokens.week, report.tokens.month) == (3000, 6000, 12200)
    assert report.cost is not None
    assert report.cost.today == pytest.approx(0.0009)  # 2000 in, 1000 out at 0.15 / 0.60 per 1M
    assert report.cost.week == pytest.approx(0.0009)  # the mistral turn has no price
    assert report.cost.month == pytest.approx((6100 * 0.15 + 3100 * 0.60) / 1e6)
    assert report.unpriced == ("mistral:mistral-small-latest",)
    by_model = {(m.model, m.tier): m for m in report.models}
    mini = by_model[("openai:gpt-4o-mini", "openai:gpt-4o-mini")]
    assert (mini.turns, mini.tokens_in, mini.tokens_out) == (4, 6100, 3100)
    assert by_model[("mistral:mistral-small-latest", "primary")].cost is None
    assert by_model[("", None)].failures == 1
    [line] = report.endpoints
    assert line.endpoint == "openai:gpt-4o-mini@example.com/v1" and line.breaker == "open"
    assert (line.latency_p50, line.latency_p95, line.errors) == (0.4, 1.5, {"ModelTransientError": 2})
    tools = {t.tool: t for t in report.tools}
    assert (tools["calculate"].calls, tools["calculate"].failures, tools["calculate"].timeouts) == (2, 1, 1)
    assert tools["current_time"].calls == 1
    assert (report.reminders.pending, report.reminders.overdue, report.reminders.paused) == (3, 1, 1)
    assert len(report.daily) == STATS_DAYS and report.daily[-1] == DayUsage(TODAY, 3, 3000)
    assert report.daily[0] == DayUsage(TODAY - timedelta(days=STATS_DAYS - 1), 1, 200)
    assert sum(d.turns for d in report.daily) == 6


@pytest.mark.postgres
async def test_report_without_prices_or_data_is_zeros(db: Database) -> None:
    stats = AdminStats(
        db, usage=UsageRepository(db), tool_events=ToolEventRepository(db), reminders=ReminderRepository(db),
        models=ChainHealth([]), prices={}, now=lambda: NOW,
    )
    report = await stats.report()
    assert report.cost is None and report.models == () and report.tools == ()
    assert report.users.total == 0 and report.turns.month == 0
    assert [d.turns for d in report.daily] == [0] * STATS_DAYS


@pytest.mark.postgres
async def test_user_directory_pages_and_searches(db: Database) -> None:
    rows = [user_row(100 + n, NOW - timedelta(minutes=n), first_name=f"Zed{n:02d}") for n in range(23)]
    rows += [
        user_row(7, NOW - timedelta(days=1), first_name="Ann", last_name="Lee", username="annie"),
        user_row(8, NOW - timedelta(days=2), first_name="Joanna", username="jo"),
        user_row(9, NOW - timedelta(days=3), first_name="Анна", username=None),
        user_row(10, NOW - timedelta(days=4), first_name="100%_sure", username="pct"),
    ]
    async with db.session() as s:
        await s.execute(insert(User), rows)
    directory = UserDirectory(db, page_size=10)

    first = await directory.page("", 0)
    assert (first.total, first.pages, first.page, len(first.rows)) == (27, 3, 0, 10)
    assert first.rows[0].id == 100, "most recently seen first"
    last = await directory.page("", 2)
    assert len(last.rows) == 7 and last.rows[-1].id == 10
    assert (await directory.page("", 99)).page == 2, "a page past the end shows the last one"
    assert (await directory.page("", -5)).page == 0

    async def ids(query: str) -> list[int]:
        return [r.id for r in (await directory.page(query, 0)).rows]

    assert await ids("ann") == [7, 8]
    assert await ids("ANNIE") == [7]
    assert await ids("@annie") == [7]
    assert await ids("lee") == [7]
    assert await ids("анна") == [9]  # Cyrillic in another case, on SQLite too
    assert await ids("8") == [108, 118, 8], "the id, and names that contain it"
    assert await ids("107") == [107]
    assert await ids("%") == [10], "LIKE wildcards are matched literally"
    assert await ids("_") == [10]
    assert await ids("nobody") == []
    empty = await directory.page("nobody", 3)
    assert (empty.total, empty.pages, empty.page) == (0, 1, 0)


# --- End to end ----------------------------------------------------------------------------


def e2e_clock() -> ShiftedClock:
    """Noon of the real UTC day: the report's "today" is the day the real turn lands on."""
    return ShiftedClock(start=datetime.combine(datetime.now(timezone.utc).date(), time(12), tzinfo=timezone.utc))


async def start_admin_bot(start_bot: BotFactory, **overrides: Any) -> Arium:
    values: dict[str, Any] = {"bot_admin_ids": str(ADMIN), "openai_api_key": FAKE_KEY, "model_prices": PRICES}
    values.update(overrides)
    return await start_bot(**values)


def everything_sent(tg: FakeTelegram, chat_id: int) -> str:
    """Every text, caption and uploaded byte the bot sent to a chat, edits included."""
    parts: list[str] = []
    for message in tg.messages(chat_id, include_deleted=True):
        parts += [message.text, message.html or "", *message.edits]
        if message.file is not None:
            parts.append(message.file.data.decode("latin-1"))
    for call in tg.calls_of("answerCallbackQuery"):
        parts.append(str(call.params.get("text", "")))
    return "\n".join(parts)


async def test_non_admins_are_refused_as_if_the_commands_did_not_exist(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_admin_bot(start_bot)
    [listing] = await command(tg, "/users")
    for text in ("/stats", "/users", "/users ann", "/health", "/stats now", "/health please"):
        [answer] = await command(tg, text, STRANGER)
        name = text.split()[0]
        assert answer.text == f"I don't know the command {name}. /help lists the ones I understand."
    assert not tg.calls_of("sendPhoto")
    # A stranger pressing (or forging) a page button gets a silent answer and changes nothing.
    tg.callback_query("usr:0:", chat_id=ADMIN, user_id=STRANGER, message_id=listing.message_id)
    await tg.wait_for(lambda: len(tg.calls_of("answerCallbackQuery")) == 1)
    assert tg.calls_of("answerCallbackQuery")[0].params.get("text") is None
    assert tg.messages(ADMIN)[-1].edits == []
    assert not model.chat_requests()


async def test_stats_shows_the_numbers_and_a_chart_without_secrets(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, started: list[Arium]
) -> None:
    clock = e2e_clock()
    noon = clock.now().replace(hour=12, minute=0, second=0, microsecond=0)
    app = await start_with_clock(tmp_path, tg, model, embedder, clock)
    started.append(app)
    model.script(Reply(text="Hello!", usage=(100, 50)))
    await command(tg, "hi there")
    await eventually(lambda: app.usage.tokens_on(ADMIN, noon.date()), lambda tokens: tokens == 150)

    async with app.db.session() as s:
        await s.execute(insert(User), [
            user_row(2001, noon - timedelta(hours=2)),
            user_row(2002, noon - timedelta(days=3), role="banned"),
            user_row(2003, noon - timedelta(days=20), active=False),
        ])
        await s.execute(insert(Reminder), [
            reminder_row(2001, "active", noon + timedelta(days=3)),
            reminder_row(2001, "active", noon + timedelta(days=4)),
            reminder_row(2001, "paused", noon + timedelta(days=5)),
        ])
    await app.usage.add_turns([
        turn(2001, MINI, noon - timedelta(hours=1), 1000, 500),
        turn(2001, MINI, noon - timedelta(hours=1), 1000, 500),
        turn(2002, MISTRAL, noon - timedelta(days=5), 2000, 1000),
        turn(2003, MINI, noon - timedelta(days=40), 7777, 7777),
    ])
    await app.tool_event_store.add_many(
        [tool("calculate", "ok", 12), tool("calculate", "timeout", 20000)], at=noon - timedelta(hours=1)
    )

    [text] = await command(tg, "/stats")
    await tg.wait_for(lambda: any(m.photo for m in tg.messages(ADMIN)))
    body = text.text
    assert "Users: 4 · active today 2 · in 7 days 3 · banned 1 · blocked the bot 1" in body
    assert "Messages (turns, failed included): today 3 · 7 days 4 · 30 days 4" in body
    assert "Tokens: today 3,150 · 7 days 6,150 · 30 days 6,150" in body
    assert "Cost estimate: today $0.0009 · 7 days $0.0009 · 30 days $0.0009 (no price set for: mistral:mistral-small-latest)" in body
    assert "• openai:gpt-4o-mini: 3 turns (0 failed) · in 2,100 · out 1,050 · $0.0009" in body
    assert "• mistral:mistral-small-latest [primary]: 1 turns (0 failed) · in 2,000 · out 1,000" in body
    assert "Reminders: 2 pending (0 overdue) · 1 paused" in body
    assert "• calculate: 2 calls · 1 failed · 1 timed out · avg 10,006 ms" in body
    endpoint = re.search(r"• openai:gpt-4o-mini@127\.0\.0\.1:\d+/openai/v1 \[openai:gpt-4o-mini\] ✅ closed: 1 requests .*", body)
    assert endpoint is not None and re.search(r"p50 \d+\.\d\d s · p95 \d+\.\d\d s · errors: 0", endpoint.group())
    assert text.html is not None and "<b>Statistics</b>" in text.html
    assert len(text.text) < 4096

    [photo] = [m for m in tg.messages(ADMIN) if m.photo]
    assert photo.file is not None and png_size(photo.file.data) == (CHART_WIDTH, CHART_HEIGHT)
    assert photo.text == "Turns and tokens per day, last 30 days (UTC)"
    assert photo.photo is not None and (photo.photo[-1]["width"], photo.photo[-1]["height"]) == (CHART_WIDTH, CHART_HEIGHT)

    sent = everything_sent(tg, ADMIN)
    for secret in (FAKE_KEY, tg.TOKEN, "test-key"):
        assert secret not in sent
    await eventually(lambda: app.audit_log.latest(5), lambda rows: any(r.action == "stats" for r in rows))
    assert [r.outcome for r in await app.audit_log.latest(5) if r.action == "stats"] == ["stats shown"]


@pytest.fixture
async def started() -> AsyncIterator[list[Arium]]:
    running: list[Arium] = []
    yield running
    for app in reversed(running):
        await app.stop()


async def start_with_clock(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, clock: ShiftedClock
) -> Arium:
    """The start_bot fixture's bot, with the report's clock set (Arium takes it, settings do not)."""
    settings = fake_settings(
        tmp_path / "data", tg, model, bot_admin_ids=str(ADMIN), openai_api_key=FAKE_KEY, model_prices=PRICES
    )
    model.accepted_keys.add(FAKE_KEY)
    app = Arium(settings, embedder=embedder, clock=clock)
    await app.start()
    return app


async def test_bad_arguments_and_group_chats_get_a_clear_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_admin_bot(start_bot)
    [answer] = await command(tg, "/stats today")
    assert answer.text == "Usage: /stats"
    [answer] = await command(tg, "/users " + "x" * 41)
    assert answer.text == "Usage: /users [name, @username or id — up to 40 characters]"
    [answer] = await command(tg, "/users " + "ы" * 21)  # 42 bytes
    assert answer.text.startswith("Usage: /users")
    group = -100555
    [answer] = await command(tg, "/stats", group, user_id=ADMIN, chat_type="group")
    assert answer.text == "Please send this command in a private chat with me: the answer is for admins only."
    [answer] = await command(tg, "/users", group, user_id=ADMIN, chat_type="group")
    assert "private chat" in answer.text
    assert not tg.calls_of("sendPhoto")


async def test_users_pages_with_buttons_and_searches(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_admin_bot(start_bot)
    now = datetime.now(timezone.utc)
    rows = [
        user_row(3000 + n, now - timedelta(hours=n + 1), first_name=f"Zed{n:02d}", username=f"zed{n:02d}")
        for n in range(22)
    ]
    rows.append(user_row(4000, now - timedelta(days=30), first_name="<b>Eve</b> & co", username="eve_x", allowed=True, active=False))
    async with app.db.session() as s:
        await s.execute(insert(User), rows)

    [page] = await command(tg, "/users")
    assert page.text.startswith("Users: 24 · page 1 of 3")
    assert "1001 Ann · admin · not allowed · active" in page.text
    assert _buttons(page) == [("▶", "usr:1:")]

    tg.callback_query("usr:1:", chat_id=ADMIN, message_id=page.message_id)
    await tg.wait_for(lambda: len(tg.messages(ADMIN)[-1].edits) == 1)
    page = tg.messages(ADMIN)[-1]
    assert page.text.startswith("Users: 24 · page 2 of 3") and "Zed09" in page.text
    assert _buttons(page) == [("◀", "usr:0:"), ("▶", "usr:2:")]

    tg.callback_query("usr:2:", chat_id=ADMIN, message_id=page.message_id)
    await tg.wait_for(lambda: len(tg.messages(ADMIN)[-1].edits) == 2)
    page = tg.messages(ADMIN)[-1]
    assert page.text.startswith("Users: 24 · page 3 of 3")
    assert "4000 <b>Eve</b> & co @eve_x · user · allowed · blocked the bot" in page.text, "names shown as written"
    assert page.html is not None and "&lt;b&gt;Eve&lt;/b&gt; &amp; co" in page.html
    assert _buttons(page) == [("◀", "usr:1:")]

    # Forged or mangled data: a notice, no change. A page past the end: the last page.
    tg.callback_query("usr:abc:", chat_id=ADMIN, message_id=page.message_id)
    await tg.wait_for(lambda: len(tg.calls_of("answerCallbackQuery")) == 3)
    assert tg.calls_of("answerCallbackQuery")[-1].params["text"] == "This button is outdated; send /users again."
    tg.callback_query("usr:999999:", chat_id=ADMIN, message_id=page.message_id)
    await tg.wait_for(lambda: len(tg.calls_of("answerCallbackQuery")) == 4)
    assert len(tg.messages(ADMIN)[-1].edits) == 2, "already the last page: nothing to change"

    [found] = await command(tg, "/users @zed07")
    assert found.text.startswith("Users matching “@zed07”: 1 · page 1 of 1") and "3007 Zed07 @zed07" in found.text
    assert _buttons(found) == []
    [found] = await command(tg, "/users zed")
    assert found.text.startswith("Users matching “zed”: 22 · page 1 of 3")
    assert _buttons(found) == [("▶", "usr:1:zed")]
    tg.callback_query("usr:2:zed", chat_id=ADMIN, message_id=found.message_id)
    await tg.wait_for(lambda: len(tg.messages(ADMIN)[-1].edits) == 1)
    assert tg.messages(ADMIN)[-1].text.startswith("Users matching “zed”: 22 · page 3 of 3")
    [none] = await command(tg, "/users nobody-like-this")
    assert none.text == "No users match “nobody-like-this”."
    assert all(len(m.text) < 4096 for m in tg.messages(ADMIN))
    assert FAKE_KEY not in everything_sent(tg, ADMIN) and tg.TOKEN not in everything_sent(tg, ADMIN)


def _buttons(message: Any) -> list[tuple[str, str]]:
    markup = message.reply_markup or {}
    return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]


async def test_russian_answers_are_valid_telegram_html(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_admin_bot(start_bot)
    await app.usage.add_turns([turn(ADMIN, MINI, datetime.now(timezone.utc), 1500, 500)])
    await app.tool_event_store.add_many([tool("calculate", "error", 3)])
    # The fake Bot API parses HTML as Telegram does: a bad template would be refused, not shown.
    [stats] = await command(tg, "/stats", language_code="ru")
    assert stats.text.startswith("Статистика · ")
    assert "Токены: сегодня 2\u00a0000" in stats.text and "Оценка расходов: сегодня $0.0005" in stats.text
    assert "✅ закрыт: запросов 0" in stats.text and "calculate: вызовов 1 · неудачных 1" in stats.text
    await tg.wait_for(lambda: any(m.photo for m in tg.messages(ADMIN)))
    assert [m for m in tg.messages(ADMIN) if m.photo][0].text == "Ходы и токены по дням, последние 30 дней (UTC)"
    [users] = await command(tg, "/users ann", language_code="ru")
    assert users.text.startswith("Пользователи по запросу «ann»: 1 · страница 1 из 1")
    assert "админ · не допущен · активен · был " in users.text
    [health] = await command(tg, "/health", language_code="ru")
    assert health.text.startswith("Состояние · ") and "Последняя ошибка: не было с момента запуска" in health.text
    [usage] = await command(tg, "/users " + "x" * 50, language_code="ru")
    assert usage.text == "Как пользоваться: /users [имя, @username или id — до 40 символов]"
