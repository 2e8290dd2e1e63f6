"""Tool definitions: schemas from signatures, validation of the model's
arguments, injection of the context and services, visibility by role."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from bot.auth import Role
from bot.context import RequestContext
from bot.tools.registry import (
    InvalidArguments,
    Tool,
    ToolDefinitionError,
    ToolRegistry,
    build_tool,
    parse_arguments,
)
from tests.support.contexts import make_ctx


class Notebook:
    """A stand-in service, injected by type like the file sandbox."""

    def __init__(self) -> None:
        self.pages: dict[int, list[str]] = {}


def add_note(ctx: RequestContext, book: Notebook, text: str, pinned: bool = False) -> str:
    """Add a note for the user.

    Args:
        text: what to write down;
            may span lines
        pinned: keep it on top
    """
    book.pages.setdefault(ctx.user_id, []).append(text)
    return f"{len(book.pages[ctx.user_id])} notes"


async def remember(ctx: RequestContext, fact: str) -> str:
    """Remember a fact about the user."""
    return f"remembered for {ctx.user_id}: {fact}"


def test_schema_comes_from_the_signature_and_docstring() -> None:
    tool = build_tool(add_note, injectables=[Notebook])
    spec = tool.spec()
    assert spec.name == "add_note" and spec.description == "Add a note for the user."
    assert spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "description": "what to write down; may span lines"},
            "pinned": {"type": "boolean", "default": False, "description": "keep it on top"},
        },
        "required": ["text"],
    }
    assert dict(tool.injected) == {"ctx": RequestContext, "book": Notebook}
    assert not tool.is_async


def test_a_memory_style_async_function_registers_in_one_line() -> None:
    registry = ToolRegistry()
    tool = registry.register(remember, hints={"en": "remembering…"})
    assert tool is not None and tool.is_async
    assert tool.spec().parameters["properties"] == {"fact": {"type": "string"}}
    assert tool.hint("ru") == "remembering…"  # falls back to English


async def test_bound_methods_and_injection_reach_the_function() -> None:
    class Reminders:
        def __init__(self) -> None:
            self.items: list[tuple[int, str]] = []

        async def create_reminder(self, ctx: RequestContext, text: str, when: str, recurrence: str | None = None) -> str:
            """Create a reminder."""
            self.items.append((ctx.user_id, text))
            return "ok"

    service = Reminders()
    registry = ToolRegistry({Notebook: Notebook()})
    tool = registry.register(service.create_reminder)
    assert tool is not None
    assert set(tool.spec().parameters["properties"]) == {"text", "when", "recurrence"}
    assert tool.spec().parameters["required"] == ["text", "when"]
    call = registry.bind(tool, make_ctx(42), parse_arguments(tool, '{"text": "tea", "when": "5pm"}'))
    assert await call() == "ok" and service.items == [(42, "tea")]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"text": 5}', "text: Input should be a valid string"),
        ("{}", "text: Field required"),
        ('{"text": "a", "owner_id": 1}', "owner_id: Extra inputs are not permitted"),
        ('{"text": "a"', "not valid JSON"),
        ('["a"]', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('{"text": "a", "pinned": "maybe"}', "pinned: Input should be a valid boolean"),
    ],
)
def test_bad_arguments_are_explained(raw: str, fragment: str) -> None:
    tool = build_tool(add_note, injectables=[Notebook])
    with pytest.raises(InvalidArguments) as caught:
        parse_arguments(tool, raw)
    assert fragment in str(caught.value)


def test_empty_arguments_mean_no_arguments() -> None:
    def ping(ctx: RequestContext) -> str:
        """Ping."""
        return "pong"

    assert parse_arguments(build_tool(ping), "  ") == {}


def test_the_model_cannot_supply_the_context() -> None:
    tool = build_tool(remember)
    with pytest.raises(InvalidArguments, match="ctx: Extra inputs"):
        parse_arguments(tool, '{"fact": "x", "ctx": {"user_id": 1, "role": "admin"}}')


def _undocumented(x: int) -> int:
    return x


def _untyped(x) -> int:  # type: ignore[no-untyped-def]
    """Untyped."""
    return 1


def _varargs(*values: int) -> int:
    """Sum."""
    return sum(values)


def _needs_unknown_service(book: Notebook) -> str:
    """Uses a service the registry was not given."""
    return ""


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_undocumented, "docstring is required"),
        (_untyped, "needs a type annotation"),
        (_varargs, "*args"),
        (_needs_unknown_service, "cannot be described as JSON"),
    ],
)
def test_functions_that_cannot_be_tools_are_refused_with_a_reason(func: object, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message.replace("*", r"\*")):
        build_tool(func)  # type: ignore[arg-type]


def test_names_are_checked_and_unique() -> None:
    registry = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="must match"):
        registry.register(remember, name="remember me")
    registry.register(remember)
    with pytest.raises(ToolDefinitionError, match="defined twice"):
        registry.register(remember)


def test_disabled_tools_and_plugins_are_not_offered() -> None:
    registry = ToolRegistry({Notebook: Notebook()}, disabled={"remember", "notes"})
    assert registry.register(remember) is None
    assert registry.register(add_note, plugin="notes") is None
    assert len(registry) == 0 and registry.skipped == ["remember", "add_note"]


def test_admin_only_tools_are_invisible_to_users() -> None:
    def broadcast(ctx: RequestContext, text: str) -> str:
        """Send a message to every user."""
        return "sent"

    registry = ToolRegistry()
    registry.register(remember)
    registry.register(broadcast, admin_only=True)
    assert [s.name for s in registry.specs_for(make_ctx(role=Role.USER))] == ["remember"]
    assert [s.name for s in registry.specs_for(make_ctx(role=Role.ADMIN))] == ["remember", "broadcast"]


def _outside_tool(name: str, group: str = "mcp:box") -> Tool:
    """A tool described by someone else's JSON schema, as an MCP server's are."""

    async def call(ctx: RequestContext, arguments: dict[str, object]) -> str:
        return f"{ctx.user_id}:{sorted(arguments.items())}"

    schema = {"type": "object", "properties": {"ctx": {"type": "string"}}, "required": ["ctx"]}
    return Tool(name, "an outside tool", call, BaseModel, {}, True, plugin=group, input_schema=schema)


async def test_a_tool_with_its_own_schema_gets_its_arguments_as_one_dict() -> None:
    registry = ToolRegistry()
    assert registry.attach(_outside_tool("box__shout"))
    tool = registry.get("box__shout")
    assert tool is not None and tool.spec().parameters["required"] == ["ctx"]
    # An argument named like our own injected parameter is just an argument.
    arguments = parse_arguments(tool, '{"ctx": "hello"}')
    assert await registry.bind(tool, make_ctx(user_id=3), arguments)() == "3:[('ctx', 'hello')]"
    with pytest.raises(InvalidArguments, match="'ctx' is a required property"):
        parse_arguments(tool, "{}")


def test_attached_tools_stay_through_a_plugin_reload_and_names_stay_unique() -> None:
    registry = ToolRegistry()
    registry.register(remember, plugin="memo")
    assert registry.attach(_outside_tool("box__shout"))
    assert not registry.attach(_outside_tool("remember"))  # taken by a plugin's tool
    with pytest.raises(ToolDefinitionError, match="defined twice"):
        registry.register(remember, name="box__shout")
    reloaded = registry.fork(lambda tool: False)  # a reload that brings no plugin tools back
    registry.replace_tools(reloaded)
    assert [t.name for t in registry.tools()] == ["box__shout"]
    registry.detach("box__shout")
    assert len(registry) == 0


def test_tools_switched_off_at_run_time_are_listed_but_not_offered() -> None:
    registry = ToolRegistry()
    registry.register(remember, plugin="memo")
    registry.attach(_outside_tool("box__shout"))
    registry.attach(_outside_tool("box__whisper"))
    registry.switch_off({"remember", "mcp:box"})
    ctx = make_ctx(role=Role.ADMIN)
    assert registry.visible(ctx) == [] and registry.get("remember") is None and registry.get("box__shout") is None
    assert {t.name for t in registry.tools()} == {"remember", "box__shout", "box__whisper"}
    registry.switch_off({"box__whisper"})
    assert {t.name for t in registry.visible(ctx)} == {"remember", "box__shout"}
