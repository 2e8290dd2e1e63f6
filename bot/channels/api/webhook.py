"""A Telegram-style webhook receiver on a FastAPI app, knowing nothing of
what an update means: it checks the sender, reads a bounded JSON body, and
hands the update to ``accept``. `python -m bot run` in webhook mode accepts by
putting the update on python-telegram-bot's queue; the scaled mode's gateway
accepts by publishing it to the broker. Either way Telegram gets 200 only
once the update is safely taken, so an update is never lost in between.

Answers: 401 wrong or missing secret (nothing read), 413 body over the limit,
400 not a JSON object with an integer ``update_id``, 503 when ``accept``
raises UpdateNotAccepted (Telegram delivers it again later), 200 otherwise."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute

from bot.errors import ConfigError, UpdateNotAccepted

__all__ = ["SECRET_HEADER", "UpdateNotAccepted", "add_metrics_route", "add_webhook_route", "webhook_app"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's updates are a few KB; the largest (a long message with entities
# and a reply) stays far below this.
MAX_UPDATE_BYTES = 1024 * 1024

Accept = Callable[[dict[str, Any]], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def add_webhook_route(
    app: FastAPI, path: str, *, secret: str, accept: Accept, max_body_bytes: int = MAX_UPDATE_BYTES
) -> None:
    """Serve POST ``path`` on ``app``: each authenticated update goes to ``accept``."""
    if not secret:
        raise ConfigError("a webhook needs its secret (WEBHOOK_SECRET)")
    if _served(app.routes, path):
        raise ConfigError(f"the webhook path {path} is already served by the HTTP API; choose another WEBHOOK_URL path")
    expected = secret.encode()

    async def receive_update(request: Request) -> JSONResponse:
        try:
            _check_secret(request, expected)
            update = _as_update(await _read_body(request, max_body_bytes))
            await accept(update)
        except _Refused as refused:
            return _answer(refused.status, refused.message)
        except UpdateNotAccepted as exc:
            log.warning("webhook: update not taken now (%s); Telegram will deliver it again", exc)
            return _answer(503, "not accepted now; deliver it again later")
        return JSONResponse({"ok": True})

    app.add_api_route(path, receive_update, methods=["POST"], include_in_schema=False)


def add_metrics_route(app: FastAPI, render: Callable[[], bytes]) -> None:
    """GET /metrics in Prometheus' text format (the scaled mode's gateway: its
    own figures; keep API_HOST private or behind the proxy, like /healthz)."""
    from fastapi.responses import Response

    from bot.metrics import CONTENT_TYPE

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(render(), media_type=CONTENT_TYPE)


def webhook_app() -> FastAPI:
    """An app that serves only webhooks and /healthz: webhook mode without the
    HTTP API (API_ENABLED=false) exposes nothing else."""
    app = FastAPI(title="Arium webhook", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _served(routes: list[BaseRoute], path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in routes)


def _check_secret(request: Request, expected: bytes) -> None:
    # Starlette decodes header bytes as latin-1: encoding back gives the exact
    # bytes sent, and compare_digest on bytes takes the same time however many
    # leading characters match (a str with non-ASCII would raise instead).
    given = request.headers.get(SECRET_HEADER, "").encode("latin-1")
    if not hmac.compare_digest(given, expected):
        raise _Refused(401, "wrong or missing secret token")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes: by the declared length
    before reading, else while reading (a chunked body declares none)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, f"the body is over {limit} bytes")
    return bytes(body)


def _as_update(body: bytes) -> dict[str, Any]:
    try:
        update = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(update, dict):
        raise _Refused(400, "the body is not a JSON object")
    update_id = update.get("update_id")
    # bool is an int to Python, not to Telegram.
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise _Refused(400, "the update has no integer update_id")
    return update


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)
