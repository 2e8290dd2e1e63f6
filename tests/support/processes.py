"""The bot and its command line as separate OS processes, as a person or
systemd would run them: `python -m bot ...` in a fresh environment, and
stopping such a process gently or with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT

REPO = Path(__file__).resolve().parents[2]


# For bots started as processes by tests that are not about memory: embeddings
# from the fake model server, so a fresh process does not spend seconds of
# both cores loading (or first exporting) the local embedding model.
FAKE_EMBEDDINGS = "openai:text-embedding-3-small"


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The environment of a fresh shell: no Arium settings but the ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TELEGRAM_", "MISTRAL_", "OPENAI_", "DATABASE_"))}
    env.update({"BOT_DATA_DIR": str(tmp_path / "data"), **values})
    return env


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,  # no .env there
        env=clean_env(tmp_path, PYTHONPATH=str(REPO), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


Starter = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture(name="bot_process")
async def fixture_bot_process(tmp_path: Path, tg: FakeTelegram, model: FakeModelServer) -> AsyncIterator[Starter]:
    """Starts `python -m bot run` over one data directory; every process
    still running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []

    async def start(**env: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run",
            cwd=tmp_path,
            env=clean_env(
                tmp_path, PYTHONPATH=str(REPO), TELEGRAM_BOT_TOKEN=tg.TOKEN, TELEGRAM_API_URL=tg.url,
                BOT_MODELS="openai:gpt-4o-mini", OPENAI_API_KEY="test-key", OPENAI_BASE_URL=model.openai_base_url,
                BOT_POLL_TIMEOUT="1", BOT_MEMORY_EXTRACTION="false", BOT_ADMIN_IDS="",
                EMBEDDING_MODEL=FAKE_EMBEDDINGS, **env,
            ),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def kill_hard(process: asyncio.subprocess.Process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert await asyncio.wait_for(process.wait(), WAIT_LIMIT) == -signal.SIGKILL


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), WAIT_LIMIT) == 0
