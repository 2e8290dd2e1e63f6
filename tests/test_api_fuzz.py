"""Property-based fuzzing of the HTTP API from its own OpenAPI document
(schemathesis): no generated request, valid or not, gets a 5xx.

The bot runs in a thread with its own event loop, because schemathesis calls
the API synchronously from the test; the model behind it is the fake server,
answering instantly."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings

from bot.app import Arium
from bot.memory.embedder import Embedder
from bot.memory.records import NewMemory
from bot.settings import Settings
from bot.storage.repositories import UserProfile
from tests.fakes.model_server import FakeModelServer, Reply
from tests.limits import WAIT_LIMIT

USER = 3001
EXAMPLES = 150  # over every operation together: bounded, a few seconds


@dataclass(frozen=True)
class LiveApi:
    root: str
    key: str


def _settings(data_dir: Path, model: FakeModelServer) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        bot_models="openai:gpt-4o-mini",
        openai_api_key="test-key",
        openai_base_url=model.openai_base_url,
        bot_data_dir=data_dir,
        api_enabled=True,
        api_port=0,
        bot_memory_extraction=False,
        bot_rate_per_minute=0,  # the fuzzer is one user sending hundreds of requests
        bot_model_timeout=10,
    )


async def _serve(data_dir: Path, embedder: Embedder, ready: threading.Event, live: list[LiveApi], stop: asyncio.Event) -> None:
    async with FakeModelServer(models=()) as model:
        model.responder = lambda request: Reply(text="fuzzed answer")
        app = Arium(_settings(data_dir, model), embedder=embedder)
        await app.start()
        try:
            await app.users.touch(UserProfile(USER, "Fuzz"), "user")
            await app.memory.add(USER, [NewMemory("the fuzzer likes tea")])
            _, key = await app.api_keys.create("fuzz", USER)
            assert app.api is not None
            live.append(LiveApi(f"http://127.0.0.1:{app.api.port}", key))
            ready.set()
            await stop.wait()
        finally:
            await app.stop()


@pytest.fixture
def live_api(tmp_path: Path, embedder: Embedder) -> Iterator[LiveApi]:
    ready = threading.Event()
    live: list[LiveApi] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(_serve(tmp_path / "data", embedder, ready, live, stop))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="api-under-fuzz")
    thread.start()
    assert ready.wait(WAIT_LIMIT * 3), "the API did not start"
    if failure:
        raise failure[0]
    try:
        yield live[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(WAIT_LIMIT)
        loop.close()


def test_no_generated_request_gets_a_server_error(live_api: LiveApi) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api.root}/openapi.json")
    headers = {"Authorization": f"Bearer {live_api.key}"}

    @given(case=schema.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def no_server_error(case: schemathesis.Case) -> None:
        response = case.call(base_url=live_api.root, headers=headers, timeout=WAIT_LIMIT)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, "errors are OpenAI-shaped"
        outcomes[response.status_code // 100] += 1
        operations.add(f"{case.method} {case.path}")

    outcomes: Counter[int] = Counter()
    operations: set[str] = set()
    no_server_error()
    # The run reached the API's operations and got both answers and refusals.
    assert len(operations) >= 8, operations
    assert outcomes[2] > 0 and outcomes[4] > 0, outcomes
