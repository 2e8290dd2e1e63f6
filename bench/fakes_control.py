"""What P1 and P2 ask of the fakes, in one small interface with two homes.

``FakesControl`` wraps a FakeTelegram + FakeModelServer pair and answers the
benchmarks' questions (inject a user message, wait for answers, when did the
model request arrive and its answer end). It runs either

- in the bot's own process and event loop (``LocalFakes``: the old way; the
  fakes' CPU - getUpdates, HTML entity parsing, SSE generation - is counted
  in the bot's overhead and competes with it for the same core), or
- in a child process started with multiprocessing 'spawn' (``RemoteFakes``):
  the fakes get their own event loop and interpreter, as Telegram and the
  model provider are really outside the bot. The benchmark talks to it over
  a multiprocessing Pipe, one command at a time.

time.monotonic() is CLOCK_MONOTONIC on Linux, one clock for every process on
the machine, so the child's stamps compare with the parent's.

The fakes' code is not changed: the model's answer-end stamp wraps the one
instance's reply coroutine (ModelClock), as before."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.model_server import FakeModelServer, Request, Responder
from tests.fakes.telegram_server import FakeTelegram


class ModelClock:
    """When the fake model finished each response.

    The fake stamps a request's arrival (Request.at) but not the end of its
    answer, so this wraps the fake's reply coroutine on this one instance
    (the fake's code is not changed). Model time = arrival -> answer written."""

    def __init__(self, model: FakeModelServer) -> None:
        self._finished: dict[int, float] = {}
        original = model._reply  # the one seam that sees the end of a reply

        async def timed(*args: Any) -> Any:
            request: Request = args[1]
            try:
                return await original(*args)
            finally:
                self._finished[id(request)] = time.monotonic()

        model._reply = timed  # type: ignore[method-assign]

    def finished_at(self, request: Request) -> float | None:
        """When the fake finished answering `request` (None if it never answered normally)."""
        return self._finished.get(id(request))


@dataclass(frozen=True)
class Endpoints:
    """What fake_settings() reads from the two fakes (picklable)."""

    TOKEN: str
    url: str
    openai_base_url: str
    mistral_server_url: str


@dataclass(frozen=True)
class Sent:
    chat_id: int
    text: str
    at: float


@dataclass(frozen=True)
class ModelTiming:
    arrived: float
    finished: float | None
    messages: int


class FakesControl:
    """The benchmarks' questions, answered next to the fakes. Every method is a
    coroutine so the same calls work in-process and across the pipe."""

    def __init__(self, tg: FakeTelegram, model: FakeModelServer) -> None:
        self.tg, self.model = tg, model
        self.clock = ModelClock(model)

    async def endpoints(self) -> Endpoints:
        return Endpoints(self.tg.TOKEN, self.tg.url, self.model.openai_base_url, self.model.mistral_server_url)

    async def set_responder(self, responder: Responder) -> None:
        self.model.responder = responder

    async def reset_max_in_flight(self) -> None:
        self.model.max_in_flight = 0

    async def max_in_flight(self) -> int:
        return self.model.max_in_flight

    async def user_text(self, text: str, chat_id: int) -> float:
        """Queue a user's message; returns when (monotonic) it was queued."""
        at = time.monotonic()
        self.tg.user_text(text, chat_id=chat_id)
        return at

    async def user_texts(self, texts: list[tuple[int, str]]) -> float:
        """Queue many users' messages at one instant; returns when the first was queued."""
        at = time.monotonic()
        for chat_id, text in texts:
            self.tg.user_text(text, chat_id=chat_id)
        return at

    async def message_count(self, chat_id: int) -> int:
        return len(self.tg.messages(chat_id))

    async def wait_messages(self, chat_id: int, count: int, timeout: float = 10.0) -> None:
        await self.tg.wait_messages(chat_id, count, timeout)

    async def last_sent(self, chat_id: int) -> Sent:
        """The latest accepted sendMessage to `chat_id`, stamped at arrival."""
        for call in reversed(self.tg.calls):
            if call.method == "sendMessage" and call.status == 200 and call.params.get("chat_id") == chat_id:
                return Sent(chat_id, str(call.params.get("text", "")), call.at)
        raise LookupError(f"nothing was sent to chat {chat_id}")

    async def model_timing(self, text: str) -> ModelTiming | None:
        """Arrival, answer end and message count of the latest model request whose last user text is `text`."""
        for request in reversed(self.model.requests):
            if request.is_chat and request.last_user_text == text:
                return ModelTiming(request.at, self.clock.finished_at(request), len(request.messages))
        return None

    async def call_count(self, method: str) -> int:
        return len(self.tg.calls_of(method))

    async def sent_total(self) -> int:
        return sum(1 for c in self.tg.calls if c.method == "sendMessage" and c.status == 200)

    async def wait_sent_total(self, count: int, timeout: float, interval: float = 0.05) -> bool:
        """Poll (cheaply, next to the fake) until `count` sendMessage calls were accepted."""
        deadline = time.monotonic() + timeout
        while await self.sent_total() < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(interval)
        return True

    async def sent_since(self, index: int) -> list[Sent]:
        """Accepted sendMessage calls after the first `index` ones, in arrival order."""
        sent = [c for c in self.tg.calls if c.method == "sendMessage" and c.status == 200]
        return [Sent(int(c.params.get("chat_id", 0)), str(c.params.get("text", "")), c.at) for c in sent[index:]]

    async def model_arrivals(self, prefix: str) -> list[float]:
        return sorted(r.at for r in self.model.chat_requests() if r.last_user_text.startswith(prefix))

    async def process_cpu(self) -> float:
        """CPU seconds of the process the fakes run in."""
        return time.process_time()


class LocalFakes:
    """The fakes in this process and event loop (the old way)."""

    mode = "in-process"

    def __init__(self) -> None:
        self.tg = FakeTelegram()
        self.model = FakeModelServer()
        self.control: FakesControl | None = None

    async def __aenter__(self) -> FakesControl:
        await self.tg.start()
        await self.model.start()
        self.control = FakesControl(self.tg, self.model)
        return self.control

    async def __aexit__(self, *exc_info: object) -> None:
        await self.model.stop()
        await self.tg.stop()


class _Proxy:
    """FakesControl's methods, called across the pipe."""

    def __init__(self, remote: RemoteFakes) -> None:
        self._remote = remote

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not hasattr(FakesControl, name):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._remote.call(name, *args, **kwargs)

        return call


class RemoteFakes:
    """The fakes in a child process (multiprocessing 'spawn'), with their own event loop."""

    mode = "separate process"

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Any:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._process = ctx.Process(target=_child_main, args=(child,), name="arium-bench-fakes", daemon=True)
        self._process.start()
        child.close()
        ready = await self._receive(timeout=60.0)
        if ready != "ready":
            raise RuntimeError(f"the fakes process did not start: {ready!r}")
        return _Proxy(self)

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._conn is not None:
                self._conn.send(("__stop__", (), {}))
                await self._receive(timeout=10.0)
        except (OSError, EOFError, TimeoutError):
            pass
        finally:
            if self._process is not None:
                await asyncio.to_thread(self._process.join, 10.0)
                if self._process.is_alive():
                    self._process.terminate()
            if self._conn is not None:
                self._conn.close()

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        assert self._conn is not None
        async with self._lock:
            self._conn.send((name, args, kwargs))
            ok, value = await self._receive(timeout=120.0)
        if not ok:
            raise value
        return value

    async def _receive(self, timeout: float) -> Any:
        """Wait for the pipe to be readable without blocking the event loop."""
        assert self._conn is not None
        loop = asyncio.get_running_loop()
        if not self._conn.poll():
            readable = loop.create_future()
            fd = self._conn.fileno()
            loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
            try:
                async with asyncio.timeout(timeout):
                    await readable
            finally:
                loop.remove_reader(fd)
        return self._conn.recv()


def _child_main(conn: Connection) -> None:
    asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    async with FakeTelegram() as tg, FakeModelServer() as model:
        control = FakesControl(tg, model)
        conn.send("ready")
        while True:
            if not conn.poll():
                readable = loop.create_future()
                loop.add_reader(conn.fileno(), lambda f=readable: f.done() or f.set_result(None))
                try:
                    await readable
                finally:
                    loop.remove_reader(conn.fileno())
            try:
                name, args, kwargs = conn.recv()
            except EOFError:
                return  # the benchmark went away
            if name == "__stop__":
                conn.send((True, None))
                return
            try:
                value = await getattr(control, name)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - sent back to the benchmark to raise there
                conn.send((False, exc))
            else:
                conn.send((True, value))
