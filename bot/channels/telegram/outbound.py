"""Sending to Telegram: the one place that builds a client for a Bot API
server, and the one translation of Telegram's send errors into what the
core's senders decide on (block the recipient, wait, retry, give up).

Each core sender (fired reminders, broadcasts) maps a SendProblem onto its
own errors; none of them looks at Telegram's exception classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import httpx
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import ApplicationBuilder
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning


def new_bot(token: str, api_url: str, *, request: HTTPXRequest | None = None) -> Bot:
    """A Bot for the Bot API server at ``api_url`` (``{root}/bot{token}/{method}``).
    With ``request``, it is used for both of PTB's request slots (a bot that never polls)."""
    return Bot(
        token, base_url=f"{api_url}/bot", base_file_url=f"{api_url}/file/bot",
        request=request, get_updates_request=request,
    )


def application_builder(token: str, api_url: str) -> ApplicationBuilder:  # type: ignore[type-arg]
    """The builder of the channel's Application, pointed at the same server."""
    return ApplicationBuilder().token(token).base_url(f"{api_url}/bot").base_file_url(f"{api_url}/file/bot")


class Problem(StrEnum):
    BLOCKED = "blocked"  # 403: blocked by the user, account deleted, never started the bot
    CHAT_GONE = "chat_gone"  # 400 "chat not found": will not change on a retry
    FLOOD = "flood"  # 429: wait retry_after seconds
    REJECTED = "rejected"  # any other 400: this request, as sent, was refused
    UNCERTAIN = "uncertain"  # the request may have reached Telegram: a retry could deliver twice
    TRANSIENT = "transient"  # it did not reach Telegram, or Telegram failed: worth a retry


@dataclass(frozen=True)
class SendProblem:
    kind: Problem
    message: str
    retry_after: float = 0.0


# Transport failures after which the request cannot have reached Telegram.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def classify(exc: TelegramError) -> SendProblem:
    if isinstance(exc, Forbidden):
        return SendProblem(Problem.BLOCKED, exc.message)
    if isinstance(exc, RetryAfter):
        return SendProblem(Problem.FLOOD, exc.message, retry_after_seconds(exc))
    if isinstance(exc, BadRequest):
        gone = "chat not found" in exc.message.lower()
        return SendProblem(Problem.CHAT_GONE if gone else Problem.REJECTED, exc.message)
    if isinstance(exc, (TimedOut, NetworkError)):
        cause = exc.__cause__
        # A read timeout or a dropped connection may come after Telegram took the message.
        uncertain = isinstance(cause, httpx.TransportError) and not isinstance(cause, _NOT_SENT)
        return SendProblem(Problem.UNCERTAIN if uncertain else Problem.TRANSIENT, exc.message)
    return SendProblem(Problem.TRANSIENT, exc.message)


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB announces a type change of this attribute
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
