"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL
is set), and the bot running against the protocol fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never read a developer's .env or TOML file.
os.environ.pop("BOT_CONFIG", None)

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")


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
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind the run has."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'arium.db'}"
        return
    assert POSTGRES_URL
    await reset_postgres(POSTGRES_URL)
    yield POSTGRES_URL
