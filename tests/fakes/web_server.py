"""A fake web for the web tools: one real HTTP server on 127.0.0.1, in the
caller's event loop, whose paths tests define (pages, redirects, endless
bodies, answers that never come). The same server plays a SearXNG instance
or the Brave Search API: a test puts a JSON page at their paths.

Every request is recorded as the server saw it, so a test can tell what
reached the network at all (a refused address must not)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Stream:
    """What an endless body managed to send before the client hung up."""

    sent: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class FakeWeb:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._routes: dict[str, Handler] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    async def __aenter__(self) -> FakeWeb:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()  # releases the handlers that never answer
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        assert self._url is not None, "FakeWeb is not started"
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    # ---- defining the web ---------------------------------------------------

    def page(
        self,
        path: str,
        body: str | bytes,
        *,
        content_type: str = "text/html; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body

        async def answer(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=data, status=status, headers={"Content-Type": content_type, **(headers or {})})

        self._routes[path] = answer

    def json(self, path: str, data: Any, *, status: int = 200) -> None:
        self.page(path, json.dumps(data), content_type="application/json", status=status)

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        async def answer(_request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location})

        self._routes[path] = answer

    def endless(self, path: str, total: int, *, content_type: str = "text/plain") -> Stream:
        """A ``total``-byte body sent in 64 KB pieces, as fast as the client reads."""
        record = Stream()
        piece = b"a" * 65536

        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(total)})
            try:
                await response.prepare(request)
                while record.sent < total:
                    chunk = piece[: total - record.sent]
                    await response.write(chunk)
                    record.sent += len(chunk)
                await response.write_eof()
            except (ConnectionError, asyncio.CancelledError):
                pass  # the client hung up: what we wanted to see
            finally:
                record.finished.set()
            return response

        self._routes[path] = answer
        return record

    def hang(self, path: str) -> None:
        """Accept the request and never answer (until the server stops)."""

        async def answer(_request: web.Request) -> web.StreamResponse:
            await self._stopping.wait()
            return web.Response(status=503)

        self._routes[path] = answer

    def custom(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.query), dict(request.headers)))
        handler = self._routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not found", content_type="text/plain")
        return await handler(request)
