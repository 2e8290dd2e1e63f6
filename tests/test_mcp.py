"""MCP tool servers: a peer-written server from the package index
(mcp-server-time) over stdio through a whole turn, and our own fault server
(tests/fakes/mcp_server.py) over streamable HTTP and stdio for hangs,
crashes, malformed and huge results. Real servers, the real SDK."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import types

from bot.auth import Role
from bot.errors import ToolError
from bot.settings import McpServerSettings, McpSettings, load_settings
from bot.tools.executor import ToolExecutor, ToolStatus
from bot.tools.mcp.results import PART_CHARS, UnusableSchema, checked_schema, model_tool_name, result_text
from bot.tools.mcp.server import McpServer
from bot.tools.mcp.views import ServerState
from bot.tools.registry import ToolRegistry, parse_arguments
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import PRIVATE, tool_results
from tests.support.contexts import make_ctx
from tests.support.processes import REPO

READY_WAIT = 60.0  # a cold interpreter importing the SDK on a busy machine
FAST_RESTARTS = (0.05, 0.1, 0.2)


def stdio_fault_server(**extra: Any) -> McpServerSettings:
    return McpServerSettings(
        command=sys.executable, args=["-m", "tests.fakes.mcp_server", "--stdio"], cwd=REPO, **extra
    )


def time_server(**extra: Any) -> McpServerSettings:
    return McpServerSettings(command=sys.executable, args=["-m", "mcp_server_time"], **extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fault_server_process(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Our fault server over streamable HTTP on ``port``, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_server", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        process.kill()  # not terminate: a graceful stop would wait for the hung calls
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def http_fault_server() -> Iterator[str]:
    """Our fault server over streamable HTTP, shared by the module's tests
    (none of which crashes it)."""
    port = free_port()
    with fault_server_process(port):
        yield f"http://127.0.0.1:{port}/mcp"


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError("the MCP fault server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            import time

            time.sleep(0.05)
    raise RuntimeError("the MCP fault server did not start listening")


class Running:
    """One McpServer kept up by its task, with a registry and an executor
    as the bot would have them."""

    def __init__(self, server: McpServer, registry: ToolRegistry, task: asyncio.Task[None]) -> None:
        self.server, self.registry, self.task = server, registry, task
        self.executor = ToolExecutor(workers=2, queue_size=4, timeout=30, per_user=4)

    async def ready(self) -> None:
        await asyncio.wait_for(self.server.ready.wait(), READY_WAIT)

    async def call(
        self, tool: str, arguments: dict[str, Any], role: Role = Role.USER, key: str | None = None
    ) -> Any:
        """Through the registry and the executor, as a turn calls it (``key``: the call's tool_call_key)."""
        found = self.registry.get(tool)
        assert found is not None, f"{tool} is not offered; offered: {[t.name for t in self.registry.tools()]}"
        ctx = make_ctx(user_id=42, role=role, language="ru", tz="Europe/Berlin").model_copy(
            update={"tool_call_key": key}
        )
        bound = self.registry.bind(found, ctx, parse_arguments(found, json.dumps(arguments)))
        return await self.executor.run(found.name, ctx.user_id, bound, is_async=True, timeout=found.timeout)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Running] = []

    async def start(name: str, config: McpServerSettings, **options: Any) -> Running:
        registry = ToolRegistry(disabled=options.pop("disabled", ()))
        options.setdefault("restart_delays", FAST_RESTARTS)
        server = McpServer(name, config, registry, log_dir=tmp_path / "logs", **options)
        one = Running(server, registry, asyncio.create_task(server.run()))
        started.append(one)
        return one

    yield start
    for one in started:
        one.server.stop()
        await asyncio.wait_for(one.task, 20)
        await one.executor.shutdown(grace=1)


# Pure mapping: names, schemas, results ---------------------------------------------


def test_tool_names_carry_the_server_and_fit_what_providers_accept() -> None:
    assert model_tool_name("time", "get_current_time") == "time__get_current_time"
    assert model_tool_name("git", "repo.status/all") == "git__repo_status_all"
    long = model_tool_name("search", "x" * 100)
    assert len(long) == 64 and long != model_tool_name("search", "x" * 101)  # cut, and still unique
    assert model_tool_name("7zip", "pack").startswith("t_7zip__")


def test_schemas_that_are_not_an_object_or_not_valid_are_refused() -> None:
    assert checked_schema(None) == {"type": "object", "properties": {}}
    assert checked_schema({"type": "object", "required": []})["properties"] == {}
    with pytest.raises(UnusableSchema, match="not an object"):
        checked_schema({"type": "string"})
    with pytest.raises(UnusableSchema, match="invalid JSON schema"):
        checked_schema({"type": "object", "properties": {"a": {"type": 12}}})


def test_results_become_text_the_model_can_read() -> None:
    image = types.ImageContent(type="image", data="A" * 4096, mime_type="image/png")
    text = types.TextContent(type="text", text="hello")
    assert result_text(types.CallToolResult(content=[text, image])) == (
        "hello\n\n[an image (image/png, 3 KB) the tool returned: not shown here]"
    )
    structured = types.CallToolResult(content=[], structured_content={"temp": 21})
    assert result_text(structured) == '{"temp": 21}'
    assert result_text(types.CallToolResult(content=[])) == "done (the tool returned nothing)"
    huge = result_text(types.CallToolResult(content=[types.TextContent(type="text", text="y" * (PART_CHARS + 10))]))
    assert huge.endswith("[cut: 10 more characters]") and len(huge) < PART_CHARS + 40
    with pytest.raises(ToolError, match="disk full"):
        result_text(types.CallToolResult(content=[types.TextContent(type="text", text="disk full")], is_error=True))


def test_three_lines_of_toml_add_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "arium.toml"
    config.write_text('[mcp.servers.time]\ncommand = "uvx"\nargs = ["mcp-server-time"]\n')
    monkeypatch.setenv("BOT_CONFIG", str(config))
    settings = load_settings()
    server = settings.mcp.servers["time"]
    assert (server.command, server.args, server.transport, server.admin_only) == ("uvx", ["mcp-server-time"], "stdio", False)


def test_bad_server_tables_are_refused_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "arium.toml"
    monkeypatch.setenv("BOT_CONFIG", str(config))
    for table, reason in (
        ('[mcp.servers.x]\nargs = ["a"]\n', "exactly one of `command`"),
        ('[mcp.servers.x]\nurl = "ftp://host/mcp"\n', "must start with http"),
        ('[mcp.servers.Bad__Name]\ncommand = "a"\n', "MCP server name"),
        ('[mcp.servers.x]\ncommand = "a"\nroles = ["owner"]\n', "MCP.SERVERS.X.ROLES"),
        ('[mcp.servers.x]\ncommand = "a"\ntimout = 3\n', "TIMOUT"),
    ):
        config.write_text(table)
        with pytest.raises(Exception, match=reason):
            load_settings()


def test_secrets_of_servers_are_kept_out_of_logs() -> None:
    settings = load_settings(
        mcp=McpSettings(
            servers={
                "gh": McpServerSettings(command="gh-mcp", env={"GITHUB_TOKEN": "ghp_secret"}),  # type: ignore[dict-item]
                "web": McpServerSettings(url="https://x/mcp", headers={"Authorization": "Bearer s3"}),  # type: ignore[dict-item]
            }
        )
    )
    assert {"ghp_secret", "Bearer s3"} <= set(settings.secrets())


# A peer's server over stdio ---------------------------------------------------------------


async def test_a_peer_written_stdio_server_adds_its_tools_under_its_name(running: Any) -> None:
    one = await running("time", time_server())
    await one.ready()
    assert {t.name for t in one.registry.tools()} == {"time__get_current_time", "time__convert_time"}
    tool = one.registry.get("time__get_current_time")
    assert tool is not None and tool.spec().parameters["required"] == ["timezone"]
    assert "(tool server: time)" in tool.description
    outcome = await one.call("time__get_current_time", {"timezone": "Asia/Tokyo"})
    assert outcome.status is ToolStatus.OK and '"timezone": "Asia/Tokyo"' in outcome.content
    failed = await one.call("time__get_current_time", {"timezone": "Mars/Olympus"})
    assert failed.status is ToolStatus.ERROR and "Mars/Olympus" in failed.content


async def test_arguments_are_checked_against_the_servers_schema(running: Any) -> None:
    one = await running("time", time_server())
    await one.ready()
    tool = one.registry.get("time__convert_time")
    assert tool is not None
    from bot.tools.registry import InvalidArguments

    with pytest.raises(InvalidArguments, match="'time' is a required property"):
        parse_arguments(tool, '{"source_timezone": "UTC", "target_timezone": "Asia/Tokyo"}')
    with pytest.raises(InvalidArguments, match="is not of type 'string'"):
        parse_arguments(tool, '{"source_timezone": 5, "time": "10:00", "target_timezone": "UTC"}')


async def test_a_stdio_server_stops_with_the_bot(running: Any) -> None:
    one = await running("faults", stdio_fault_server())
    await one.ready()
    pid = int((await one.call("faults__pid", {})).content)
    one.server.stop()
    await asyncio.wait_for(one.task, 20)
    assert one.server.state is ServerState.STOPPED and one.registry.tools() == []
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent to reap it is gone for our purposes.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(")")[-1].split()[0] != "Z"


async def test_a_stdio_server_that_dies_is_restarted(running: Any) -> None:
    one = await running("faults", stdio_fault_server())
    await one.ready()
    first = (await one.call("faults__pid", {})).content
    crashed = await one.call("faults__crash", {})
    assert crashed.status is ToolStatus.ERROR and "stopped; it is being restarted" in crashed.content
    await _until(lambda: one.server.restarts >= 1 and one.server.state is ServerState.READY)
    second = (await one.call("faults__pid", {})).content
    assert second != first and one.server.view().restarts >= 1


async def test_a_killed_stdio_server_is_noticed_without_a_call(running: Any) -> None:
    one = await running("faults", stdio_fault_server(), refresh_interval=0.2)
    await one.ready()
    pid = int((await one.call("faults__pid", {})).content)
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: one.server.restarts >= 1 and one.server.state is ServerState.READY)
    assert int((await one.call("faults__pid", {})).content) != pid


async def _until(condition: Any, timeout: float = READY_WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# Faults over streamable HTTP --------------------------------------------------------------


async def test_a_hung_server_costs_a_timeout_then_nothing(running: Any, http_fault_server: str) -> None:
    one = await running("slow", McpServerSettings(url=http_fault_server, timeout=0.5))
    await one.ready()
    for _ in range(3):
        outcome = await one.call("slow__slow", {"seconds": 60})
        assert outcome.status is ToolStatus.TIMEOUT
    # Three timeouts in a row open the breaker: the next call is refused at once.
    skipped = await one.call("slow__slow", {"seconds": 60})
    assert skipped.status is ToolStatus.ERROR and "skipped for a while" in skipped.content
    assert one.server.view().breaker == "open"


async def test_calls_past_a_servers_concurrency_are_answered_busy(running: Any, http_fault_server: str) -> None:
    one = await running("narrow", McpServerSettings(url=http_fault_server, max_concurrent=1))
    await one.ready()
    first = asyncio.create_task(one.call("narrow__slow", {"seconds": 60}))
    await _until(lambda: one.server._in_flight == 1)
    busy = await one.call("narrow__echo", {"text": "me too"})
    assert busy.status is ToolStatus.ERROR and "busy with other calls" in busy.content
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await one.call("narrow__echo", {"text": "now"})).content == "echo: now"


async def test_malformed_huge_image_and_error_results(running: Any, http_fault_server: str) -> None:
    one = await running("faults", McpServerSettings(url=http_fault_server))
    await one.ready()
    malformed = await one.call("faults__malformed", {})
    assert malformed.status is ToolStatus.ERROR and "malformed result" in malformed.content
    huge = await one.call("faults__huge", {"characters": 5_000_000})
    assert huge.ok and len(huge.content) < PART_CHARS + 100 and "more characters" in huge.content
    picture = await one.call("faults__picture", {})
    assert picture.ok and "image (image/png" in picture.content
    failed = await one.call("faults__fail", {"reason": "the disk is full"})
    assert failed.status is ToolStatus.ERROR and "the disk is full" in failed.content
    still = await one.call("faults__echo", {"text": "fine"})
    assert still.ok and still.content == "echo: fine"


async def test_an_http_server_that_crashes_mid_call_loses_its_tools_until_it_is_back(running: Any) -> None:
    port = free_port()
    with fault_server_process(port) as first:
        one = await running("flaky", McpServerSettings(url=f"http://127.0.0.1:{port}/mcp", connect_timeout=5))
        await one.ready()
        crashed = await one.call("flaky__crash", {})
        assert crashed.status is ToolStatus.ERROR and "flaky stopped; it is being restarted" in crashed.content
        first.wait(timeout=10)
        await _until(lambda: one.server.state is ServerState.RESTARTING)
        assert one.registry.get("flaky__echo") is None  # no model is offered a tool that cannot answer
    with fault_server_process(port):
        await _until(lambda: one.server.state is ServerState.READY)
        assert (await one.call("flaky__echo", {"text": "back"})).content == "echo: back"


async def test_an_unreachable_server_only_means_missing_tools(running: Any) -> None:
    one = await running("gone", McpServerSettings(url=f"http://127.0.0.1:{free_port()}/mcp", connect_timeout=5))
    await _until(lambda: one.server.restarts >= 2)
    view = one.server.view()
    assert view.state is not ServerState.READY and view.tools == () and view.error
    assert one.registry.tools() == []


async def test_user_context_is_sent_only_when_configured(running: Any, http_fault_server: str) -> None:
    private = await running("private", McpServerSettings(url=http_fault_server))
    shared = await running("shared", McpServerSettings(url=http_fault_server, send_user_context=True))
    await private.ready()
    await shared.ready()
    assert (await private.call("private__whoami", {})).content == "null"
    told = json.loads((await shared.call("shared__whoami", {})).content)
    assert told == {"id": 42, "language": "ru", "timezone": "Europe/Berlin"}


async def test_a_call_carries_its_idempotency_key_whether_or_not_user_context_is_sent(
    running: Any, http_fault_server: str
) -> None:
    private = await running("private", McpServerSettings(url=http_fault_server))
    await private.ready()
    assert json.loads((await private.call("private__call_key", {}, key="tg7:0123abcd")).content) == "tg7:0123abcd"
    assert (await private.call("private__whoami", {}, key="tg7:0123abcd")).content == "null", "still no user"
    assert (await private.call("private__call_key", {})).content == "null"


async def test_roles_and_tool_lists_decide_what_is_offered(running: Any, http_fault_server: str) -> None:
    one = await running(
        "ops",
        McpServerSettings(url=http_fault_server, roles=["admin"], tools=["echo", "pid", "crash"], tools_disabled=["crash"]),
        disabled={"ops__pid"},
    )
    await one.ready()
    assert {t.name for t in one.registry.tools()} == {"ops__echo"}
    assert [t.name for t in one.registry.visible(make_ctx(role=Role.USER))] == []
    assert [t.name for t in one.registry.visible(make_ctx(role=Role.ADMIN))] == ["ops__echo"]
    skipped = one.server.view().skipped
    assert "crash: in `tools_disabled`" in skipped and "slow: not in `tools`" in skipped


async def test_a_whole_server_can_be_disabled_by_configuration(running: Any, http_fault_server: str) -> None:
    one = await running("faults", McpServerSettings(url=http_fault_server), disabled={"mcp:faults"})
    await one.ready()
    assert one.registry.tools() == [] and "faults__echo" in one.registry.skipped


# Through the whole bot ---------------------------------------------------------------------


async def test_a_chat_uses_an_mcp_tool_through_the_whole_turn(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(tool_calls=[ToolCallSpec("time__get_current_time", {"timezone": "Europe/Berlin"})]),
        Reply(text="In Berlin it is morning."),
    )
    app = await start_bot(mcp=McpSettings(servers={"time": time_server()}))
    assert app.mcp is not None
    await asyncio.wait_for(app.mcp.servers[0].ready.wait(), READY_WAIT)
    tg.user_text("what time is it in Berlin?")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "In Berlin it is morning."
    offered = {t["function"]["name"] for t in model.chat_requests()[0].body["tools"]}
    assert {"time__get_current_time", "time__convert_time", "calculate"} <= offered
    [result] = tool_results(model)
    assert json.loads(result)["timezone"] == "Europe/Berlin"
    report = await app.health.report()
    [server] = report.mcp_servers
    assert (server.name, server.state, len(server.tools)) == ("time", ServerState.READY, 2)


async def test_admins_switch_tools_off_and_on_at_run_time(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    admin = 900
    app = await start_bot(bot_admin_ids=frozenset({admin}))
    tg.user_text("/tools off calculate", user_id=admin, chat_id=admin)
    [done] = await tg.wait_messages(admin, 1)
    assert done.text == "calculate is off: the model will not be offered it."
    tg.user_text("/tools off files", user_id=admin, chat_id=admin)
    tg.user_text("/tools", user_id=admin, chat_id=admin)
    listing = (await tg.wait_messages(admin, 3))[2].text
    assert "calculate" in listing and "files ⏸ switched off" in listing
    tg.user_text("/tools off nosuchtool", user_id=admin, chat_id=admin)
    tg.user_text("/tools sideways", user_id=admin, chat_id=admin)
    refused, usage = (await tg.wait_messages(admin, 5))[3:]
    assert refused.text == "There is no tool or group nosuchtool. /tools lists them."
    assert "/tools off NAME" in usage.text
    model.script(Reply(text="ok"))
    tg.user_text("hello")
    await tg.wait_messages(PRIVATE, 1)
    offered = {t["function"]["name"] for t in model.chat_requests()[-1].body["tools"]}
    assert "calculate" not in offered and "read_file" not in offered and "current_time" in offered
    await app.stop()
    again = await start_bot(bot_admin_ids=frozenset({admin}))  # the switches outlive a restart
    assert again.tool_registry.get("calculate") is None and again.tool_registry.get("current_time") is not None
    tg.user_text("/tools on calculate", user_id=admin, chat_id=admin)
    await tg.wait_for(lambda: any(m.text == "calculate is on again." for m in tg.messages(admin)))
    assert again.tool_registry.get("calculate") is not None


async def test_users_cannot_use_tools_command(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot()
    tg.user_text("/tools off calculate")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert "/tools" in answer.text and app.tool_registry.get("calculate") is not None


async def test_doctor_starts_each_server_and_names_one_that_fails(tmp_path: Path) -> None:
    from bot.doctor import run_doctor
    from tests.conftest import fake_settings

    async with FakeTelegram() as tg, FakeModelServer() as model:
        servers = {
            "time": time_server(),
            "broken": McpServerSettings(command=sys.executable, args=["-c", "raise SystemExit(2)"], connect_timeout=5),
            "later": time_server(enabled=False),
        }
        settings = fake_settings(tmp_path / "data", tg, model, mcp=McpSettings(servers=servers))
        lines: list[str] = []
        assert await run_doctor(settings, lines.append) == 1
    [time_line] = [line for line in lines if "mcp time" in line]
    assert time_line.startswith("ok   mcp time: stdio, 2 tools: time__get_current_time, time__convert_time")
    [broken] = [line for line in lines if "mcp broken" in line]
    assert broken.startswith("FAIL mcp broken: did not come up")
    assert "info mcp later: disabled in the configuration" in lines
