"""The HTTP API as a Channel: uvicorn serving the FastAPI app on
API_HOST:API_PORT inside the bot's event loop (and, in webhook mode,
Telegram's webhook there, with or without the API)."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from fastapi import FastAPI

from bot.channels.api.app import ApiServices, build_api
from bot.channels.base import Capabilities, Channel
from bot.errors import ConfigError
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)


class HttpChannel(Channel):
    """uvicorn serving a FastAPI app on host:port inside the bot's event loop.
    Alone (name "webhook"), it serves Telegram's webhook when the HTTP API is
    not enabled; ApiChannel serves the API (and the webhook beside it)."""

    name = "webhook"
    capabilities = Capabilities()
    title = "the webhook server"  # in its log lines and errors

    def __init__(self, app: FastAPI, *, host: str, port: int, tasks: TaskTracker) -> None:
        self.app = app
        self._tasks = tasks
        self._host, self._port = host, port
        self._socket: socket.socket | None = None
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            # No signal handlers of its own: the bot's process owns SIGTERM.
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._serving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (API_PORT 0 takes any free one)."""
        if self._socket is None:
            raise RuntimeError("the API server is not listening")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind the port now, so a taken port stops start-up with one clear
        line instead of the server exiting the process later."""
        try:
            self._socket = _listen(self._host, self._port)
        except OSError as exc:
            raise ConfigError(f"{self.title} cannot listen on {self._host}:{self._port}: {exc.strerror or exc}") from None

    async def start_receiving(self) -> None:
        assert self._socket is not None, "start() first"
        self._serving = self._tasks.spawn(self._server.serve(sockets=[self._socket]), "api-server")
        while not self._server.started:
            if self._serving.done():
                await self._serving
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("%s: listening on %s:%d", self.title.capitalize(), self._host, self.port)

    async def stop(self, timeout: float) -> None:
        if self._serving is None:
            return
        # Open event streams (the eval page's live progress) end at their next poll.
        self.app.state.stopping = True
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._serving), timeout)
        except TimeoutError:
            self._server.force_exit = True
            log.warning("API requests still running after %.0f s; stopping anyway", timeout)

    async def deliver(self, address: int, text: str) -> None:
        log.info("%s cannot deliver to %s; a client asks instead", self.title, address)


class ApiChannel(HttpChannel):
    name = "api"
    capabilities = Capabilities(streaming=True)
    title = "the HTTP API"

    def __init__(self, services: ApiServices, *, host: str, port: int, tasks: TaskTracker) -> None:
        super().__init__(build_api(services), host=host, port=port, tasks=tasks)


def _listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket declared as IPPROTO_TCP: asyncio turns Nagle's
    algorithm off only on connections whose socket says so, and with it on,
    every streamed chunk after the headers waited ~40 ms for a delayed ACK
    (socket.create_server leaves the protocol 0; measured 75 ms against 28 ms
    per streamed answer)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
