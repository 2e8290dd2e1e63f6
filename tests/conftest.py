"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL
is set), and the bot running against the protocol fakes."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.limits import WAIT_LIMIT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never read a developer's .env or TOML file.
os.environ.pop("BOT_CONFIG", None)

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")

# CI runs property-based tests with a fixed seed, so a landing never depends on
# the luck of the draw; developers' runs stay random and keep finding new cases.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


RUN_DATABASE_PREFIX = "arium_test_"


async def _on_server(url: str, *statements: str) -> list[str]:
    """Run statements outside a transaction (CREATE/DROP DATABASE need that);
    returns the first column of the last one's rows, if it has any."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    rows: list[str] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.execute(text(statement))
                rows = [row[0] for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()
    return rows


def _left_by_a_dead_run(name: str) -> bool:
    """Databases are named after the run's process id: one whose process is
    gone on this machine was left by a run that was killed."""
    pid = name.removeprefix(RUN_DATABASE_PREFIX).split("_")[0]
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """This run's own database on the server TEST_DATABASE_URL names, made at
    the start and dropped at the end, so parallel runs never share one
    (None without TEST_DATABASE_URL)."""
    if not POSTGRES_URL:
        yield None
        return
    server = make_url(POSTGRES_URL)
    name = f"{RUN_DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
    admin = server.render_as_string(hide_password=False)
    existing = asyncio.run(_on_server(admin, f"SELECT datname FROM pg_database WHERE datname LIKE '{RUN_DATABASE_PREFIX}%'"))
    stale = [f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)' for old in existing if _left_by_a_dead_run(old)]
    asyncio.run(_on_server(admin, *stale, f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_on_server(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def _database_params() -> list[object]:
    params: list[object] = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=pytest.mark.skipif(not POSTGRES_URL, reason="TEST_DATABASE_URL not set"),
        )
    )
    return params


@pytest.fixture(params=_database_params())
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> AsyncIterator[str]:
    """A fresh, empty database of each kind the run has."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'arium.db'}"
        return
    assert postgres_url
    await reset_postgres(postgres_url)
    yield postgres_url


# --- The bot against the protocol fakes ------------------------------------------

from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from bot.app import Arium  # noqa: E402
from bot.reminders.clock import Clock  # noqa: E402
from bot.memory.embedder import Embedder, SentenceTransformerEmbedder  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402
from tests.fakes.telegram_server import FakeTelegram  # noqa: E402


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


def fake_settings(data_dir: Path, tg: FakeTelegram, model: FakeModelServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": tg.TOKEN,
        "telegram_api_url": tg.url,
        "bot_models": "openai:gpt-4o-mini",
        "openai_api_key": "test-key",
        "openai_base_url": model.openai_base_url,
        "mistral_api_key": "test-key",
        "mistral_base_url": model.mistral_server_url,
        "bot_data_dir": data_dir,
        "bot_draft_interval": 0.05,
        "bot_edit_interval": 0.05,
        "bot_paste_merge_window": 0.4,
        "bot_poll_timeout": 1,
        "bot_model_timeout": 10,
        # Extraction is one more model request per turn; tests of it turn it on,
        # after every turn unless a test waits for a quiet spell itself.
        "bot_memory_extraction": False,
        "bot_memory_extract_after": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


BotFactory = Callable[..., Awaitable[Arium]]
T = TypeVar("T")


async def eventually(
    fetch: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = WAIT_LIMIT
) -> T:
    """Wait for state the fakes cannot observe (the database, background
    work), which the bot writes after a reply is sent; returns the value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fetch()
        if check(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, f"condition not reached; last value {value!r}"
        await asyncio.sleep(0.02)


async def handled_so_far(tg: FakeTelegram, chat_id: int, user_id: int | None = None) -> None:
    """Return once the bot has handled every update sent to ``chat_id`` before
    this call. Updates of one chat are handled in order, so when the /help sent
    now has its answer, nothing sent earlier can still produce one. This is how
    a test waits for "nothing else happened" without guessing a sleep; the
    /help answer is one more message in the chat."""
    before = len(tg.messages(chat_id))
    tg.user_text("/help", chat_id=chat_id, user_id=user_id)
    await tg.wait_for(lambda: any("/help" in m.text for m in tg.messages(chat_id)[before:]))


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The bundled all-MiniLM-L6-v2, loaded once per run (a few seconds) and shared."""
    return SentenceTransformerEmbedder()


@pytest.fixture
async def start_bot(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder
) -> AsyncIterator[BotFactory]:
    """Starts the real Application against the fakes; every bot is stopped at teardown."""
    running: list[Arium] = []

    async def start(*, clock: Clock | None = None, **overrides: Any) -> Arium:
        """``clock``: a clock the test moves (reminders, code expiry)."""
        app = Arium(fake_settings(tmp_path / "data", tg, model, **overrides), embedder=embedder, clock=clock)
        await app.start()
        running.append(app)
        return app

    yield start
    for app in reversed(running):
        await app.stop()


async def stop_bot(app: Arium) -> None:
    await app.stop()


HeadlessStarter = Callable[..., Awaitable[Arium]]


@pytest.fixture
async def headless(tmp_path: Path, model: FakeModelServer, embedder: Embedder) -> AsyncIterator[HeadlessStarter]:
    """Starts headless bots (the evaluation harness's: no channel) against the fake model; stopped at teardown."""
    apps: list[Arium] = []

    async def start(**overrides: Any) -> Arium:
        async with FakeTelegram() as tg:  # fake_settings needs one; a headless bot never calls it
            settings = fake_settings(tmp_path / "data", tg, model, **overrides)
        app = Arium(settings, embedder=embedder, headless=True)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        await app.stop()
