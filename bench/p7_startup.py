"""P7: from starting `python -m bot run` to the first answered message, and
the idle memory of the running process.

The bot runs as a real subprocess (interpreter start, imports, settings,
migrations, Telegram initialisation, first poll) against the fakes in this
process. A user's message is already waiting in the fake's update queue when
the process starts, so the time measured is spawn -> the answer's
sendMessage. The embedding model loads in the background meanwhile (DESIGN:
the bot answers before it is ready). Two starts: the first on an empty data
directory (migrations from scratch, the embedder exported to ONNX), the
second on the same directory (the usual restart).

    .venv/bin/python -m bench.p7_startup     # about a minute
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram

CHAT = 7001
BUDGET_SECONDS = 3.0
ANSWER_TIMEOUT = 60.0
IDLE_SETTLE_SECONDS = 20.0  # long enough for the embedder to finish loading


def bot_environment(tg: FakeTelegram, model: FakeModelServer, data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BOT_", "TELEGRAM_", "OPENAI_"))}
    env.update(
        TELEGRAM_BOT_TOKEN=tg.TOKEN,
        TELEGRAM_API_URL=tg.url,
        BOT_MODELS="openai:gpt-4o-mini",
        OPENAI_API_KEY="bench-key",
        OPENAI_BASE_URL=model.openai_base_url,
        BOT_DATA_DIR=str(data_dir),
        BOT_POLL_TIMEOUT="1",
        BOT_LOG_STDERR="false",
        HF_HUB_OFFLINE="1",
    )
    return env


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def one_start(tg: FakeTelegram, model: FakeModelServer, data_dir: Path, label: str) -> tuple[float, float | None]:
    """Seconds from spawn to the answer, and the idle RSS in MB."""
    before = len(tg.messages(CHAT))
    tg.user_text(f"hello ({label})", chat_id=CHAT)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run",
        env=bot_environment(tg, model, data_dir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await tg.wait_messages(CHAT, before + 1, timeout=ANSWER_TIMEOUT)
        answered = time.monotonic() - started
        await asyncio.sleep(max(0.0, IDLE_SETTLE_SECONDS - answered))
        return answered, rss_mb(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def run() -> list[tuple[str, float, float | None]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="arium-p7-") as tmp:
        async with FakeTelegram() as tg, FakeModelServer() as model:
            model.script(Reply(text="Hi!"), Reply(text="Hi again!"))
            for label in ("first start, empty data dir", "restart, same data dir"):
                answered, rss = await one_start(tg, model, Path(tmp) / "data", label)
                results.append((label, answered, rss))
    return results


def main() -> None:
    rows = asyncio.run(run())
    print(f"\nP7, {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}\n")
    print("| start | spawn -> first answer | budget | result | idle RSS |")
    print("| --- | --- | --- | --- | --- |")
    for label, answered, rss in rows:
        verdict = "PASS" if answered <= BUDGET_SECONDS else "FAIL"
        memory = f"{rss:.0f} MB" if rss is not None else "-"
        print(f"| {label} | {answered:.2f} s | <= {BUDGET_SECONDS:.0f} s | {verdict} | {memory} |")


if __name__ == "__main__":
    main()
