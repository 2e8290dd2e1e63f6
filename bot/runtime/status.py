"""A status file the running bot rewrites every few seconds, so `python -m bot
doctor` (a separate process) can show live model health without asking the bot."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
# Older than this, the file describes a bot that is no longer running.
FRESH_FOR = 120.0


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(temporary, path)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The running bot's status, or None if there is no fresh one."""
    path = data_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if time.time() - float(data.get("updated_at", 0)) > FRESH_FOR:
        return None
    return data


class StatusWriter:
    def __init__(self, data_dir: Path, collect: Callable[[], dict[str, Any]], interval: float = 15.0) -> None:
        self._path = data_dir / STATUS_FILE
        self._collect = collect
        self._interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Write until stopped; a failed write is logged and retried next round."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        while not self._stop.is_set():
            self.write_now()
            try:
                await asyncio.wait_for(self._stop.wait(), self._interval)
            except TimeoutError:
                pass
        self._path.unlink(missing_ok=True)

    def write_now(self) -> None:
        try:
            write_atomically(self._path, {"updated_at": time.time(), "pid": os.getpid(), **self._collect()})
        except OSError as exc:
            log.warning("could not write %s: %s", self._path, exc)

    def stop(self) -> None:
        self._stop.set()
