"""What the rest of Arium reads about MCP servers (doctor, /health, /tools);
no SDK import here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    DISABLED = "disabled"


@dataclass(frozen=True)
class ServerView:
    """What doctor, /health and /tools show about one server."""

    name: str
    transport: str
    state: ServerState
    tools: tuple[str, ...]  # names the model sees
    skipped: tuple[str, ...]  # server tools not offered, each with the reason
    restarts: int
    error: str | None
    breaker: str
