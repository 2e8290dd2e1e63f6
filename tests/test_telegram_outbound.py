"""The one translation of Telegram's send errors (bot/channels/telegram/outbound.py)."""

from __future__ import annotations

import httpx
import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut

from bot.channels.telegram.outbound import Problem, classify


def caused_by(error: TelegramError, cause: BaseException) -> TelegramError:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (Forbidden("Forbidden: bot was blocked by the user"), Problem.BLOCKED),
        (BadRequest("Bad Request: chat not found"), Problem.CHAT_GONE),
        (BadRequest("Bad Request: can't parse entities"), Problem.REJECTED),
        # Connecting failed: the message cannot have arrived, a retry is safe.
        (caused_by(NetworkError("connect failed"), httpx.ConnectError("refused")), Problem.TRANSIENT),
        (caused_by(TimedOut("pool"), httpx.PoolTimeout("pool")), Problem.TRANSIENT),
        # The answer did not come back: Telegram may have taken the message.
        (caused_by(TimedOut("read"), httpx.ReadTimeout("read")), Problem.UNCERTAIN),
        (caused_by(NetworkError("dropped"), httpx.RemoteProtocolError("eof")), Problem.UNCERTAIN),
        (TelegramError("Internal Server Error"), Problem.TRANSIENT),
    ],
)
def test_each_send_error_has_one_meaning(error: TelegramError, kind: Problem) -> None:
    assert classify(error).kind is kind


def test_flood_control_carries_its_wait() -> None:
    problem = classify(RetryAfter(7))
    assert problem.kind is Problem.FLOOD and problem.retry_after == 7.0
