"""What every benchmark needs: the fakes (in this event loop or in a child
process) and the real bot, the fake model's response times, percentiles, and
one row of the table.

The fakes and their settings come from tests/ by import, so the benchmarks
run the bot exactly the way the end-to-end tests do."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baseline_bot import ThinnestBot
from bench.fakes_control import FakesControl, LocalFakes, ModelClock, RemoteFakes
from bot.app import Arium
from tests.conftest import fake_settings
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram

PROVIDER_MODELS = {"openai": "openai:gpt-4o-mini", "mistral": "mistral:mistral-small-latest"}
# P1 and P2 run each scenario on both, side by side: Arium and the thinnest bot (bench/baseline_bot.py).
BOTS = ("arium", "thinnest")


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    bench: str
    provider: str
    measure: str
    value: str
    budget: str = "-"
    result: str = "info"


@dataclass
class Rig:
    fakes: FakesControl  # (a proxy to) the fakes' control, in this process or the child
    app: Arium | ThinnestBot
    tg: FakeTelegram | None = None  # the fake objects themselves: in-process runs only
    model: FakeModelServer | None = None
    clock: ModelClock | None = None


FAKES_MODES = ("process", "inprocess")


@asynccontextmanager
async def running_bot(provider: str, fakes: str = "inprocess", **overrides: Any) -> AsyncIterator[Rig]:
    """Fresh fakes, a fresh SQLite file in a temp dir, and the real Arium.

    fakes="process" runs the fake Telegram and model servers in a child
    process (bench/fakes_control.py), so their CPU is not the bot's; rig.tg
    and rig.model are then None and everything goes through rig.fakes."""
    home = RemoteFakes() if fakes == "process" else LocalFakes()
    with tempfile.TemporaryDirectory(prefix="arium-bench-") as tmp:
        async with home as control:
            endpoints = await control.endpoints()
            # A short shutdown wait keeps a failed run bounded in time.
            settings = fake_settings(
                Path(tmp) / "data", endpoints, endpoints, bot_models=PROVIDER_MODELS[provider],  # type: ignore[arg-type]
                bot_shutdown_timeout=5.0, **overrides,
            )
            app = Arium(settings)
            await app.start()
            # Measure the steady state: the embedding model loads once at start,
            # in a thread, and competes for the CPU with every turn until it is ready.
            await app.memory.embeddings.wait_ready(120)
            await app.freeze_startup_heap()  # as `python -m bot run` does once started
            try:
                yield _rig(home, control, app)
            finally:
                await app.stop()


@asynccontextmanager
async def running_thinnest(provider: str, fakes: str = "inprocess") -> AsyncIterator[Rig]:
    """Fresh fakes and the thinnest bot, configured as running_bot configures Arium."""
    home = RemoteFakes() if fakes == "process" else LocalFakes()
    async with home as control:
        endpoints = await control.endpoints()
        base_url = endpoints.openai_base_url if provider == "openai" else endpoints.mistral_server_url
        bot = ThinnestBot(
            endpoints.TOKEN, endpoints.url, provider, PROVIDER_MODELS[provider].split(":", 1)[1], "test-key", base_url
        )
        await bot.start()
        try:
            yield _rig(home, control, bot)
        finally:
            await bot.stop()


def _rig(home: LocalFakes | RemoteFakes, control: FakesControl, app: Arium | ThinnestBot) -> Rig:
    """In-process fakes are handed over as objects too; a child process's only through control."""
    if isinstance(home, LocalFakes):
        return Rig(control, app, home.tg, home.model, control.clock)
    return Rig(control, app)


def running(bot: str, provider: str, fakes: str, **overrides: Any) -> Any:
    """The context manager of the bot named (one of BOTS); overrides are Arium settings."""
    return running_thinnest(provider, fakes) if bot == "thinnest" else running_bot(provider, fakes, **overrides)


async def until_idle(app: Arium | ThinnestBot, timeout: float = 10.0) -> None:
    """Wait until no update is being handled (the reply is sent and the turn's
    writes are done), so the next turn does not queue behind this one. Long-lived
    background tasks (status writer, ...) are not waited for: they never end."""
    processor = app.update_processor if isinstance(app, ThinnestBot) else app.telegram.application.update_processor
    deadline = time.monotonic() + timeout
    while processor.current_concurrent_updates:
        if time.monotonic() > deadline:
            raise RuntimeError("the bot was still handling an update after 10 s")
        await asyncio.sleep(0.001)


async def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Cheap polling for many-chat waits: the fake's wait_for would re-run the
    check on every request it serves, stealing CPU from the run being measured.
    Timings come from the fakes' own stamps, so the interval does not matter."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 was really seen)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def bounded(work: Awaitable[list[Row]], seconds: float, bench: str, provider: str) -> list[Row]:
    """A benchmark that hangs or breaks becomes a FAIL row; the other rows still print."""
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            return await work
    except Exception as exc:  # noqa: BLE001 - reported in the table, with its message
        if limit.expired():
            return [Row(bench, provider, "finished", f"timed out after {seconds:.0f} s", "-", "FAIL")]
        return [Row(bench, provider, "finished", f"broke: {exc.__class__.__name__}: {exc}", "-", "FAIL")]
