"""Tools as typed Python functions. A tool's JSON schema is derived from its
signature and docstring with pydantic; the model's arguments are validated
against the same pydantic model before the call.

Parameters annotated with an *injectable* type are filled in by Arium and are
not part of the schema: ``RequestContext`` always, plus any service the
composition root hands the registry (the file sandbox, for example). So

    async def remember(ctx: RequestContext, fact: str) -> str:
        '''Remember a fact about the user.'''

registers as a tool with one argument, ``fact``."""

from __future__ import annotations

import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bot.context import RequestContext
from bot.errors import ConfigError
from bot.llm.types import ToolSpec

# OpenAI and Mistral both require this shape for function names.
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


class ToolDefinitionError(ConfigError):
    """A function cannot be a tool (no docstring, untyped parameter, bad name...)."""


@dataclass(frozen=True)
class Tool:
    """One callable tool and everything needed to offer it and call it."""

    name: str
    description: str
    func: Callable[..., Any]
    arguments: type[BaseModel]
    injected: Mapping[str, type]  # parameter name -> injectable type
    is_async: bool
    admin_only: bool = False
    timeout: float | None = None  # None: the executor's default
    hints: Mapping[str, str] = field(default_factory=dict)  # language -> progress hint
    plugin: str = ""
    # A tool described by someone else's JSON schema (an MCP server's) instead
    # of a Python signature: the schema is passed through to the model, the
    # model's arguments are checked against it, and ``func(ctx, arguments)``
    # gets them as one dict (their names are not ours to turn into keywords).
    input_schema: Mapping[str, Any] | None = None

    @cached_property
    def _built_spec(self) -> ToolSpec:
        # Built once: generating a JSON schema costs ~1.5 ms per tool, and every turn offers every tool.
        if self.input_schema is not None:
            return ToolSpec(self.name, self.description, dict(self.input_schema))
        return ToolSpec(self.name, self.description, _clean_schema(self.arguments.model_json_schema()))

    @cached_property
    def _schema_validator(self) -> Any:
        from jsonschema.validators import validator_for

        schema = dict(self.input_schema or {})
        return validator_for(schema)(schema)

    def spec(self) -> ToolSpec:
        return self._built_spec

    def hint(self, language: str) -> str | None:
        return self.hints.get(language) or self.hints.get("en")

    def visible_to(self, ctx: RequestContext) -> bool:
        return ctx.is_admin or not self.admin_only


class InvalidArguments(Exception):
    """The model's arguments do not fit the tool's schema; the text says how."""


def parse_arguments(tool: Tool, raw: str) -> dict[str, Any]:
    """Validate the model's JSON arguments; the keyword arguments for the call."""
    text = raw.strip() or "{}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArguments(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(data, dict):
        raise InvalidArguments("arguments must be a JSON object")
    if tool.input_schema is not None:
        return _check_against_schema(tool, data)
    try:
        model = tool.arguments.model_validate(data)
    except ValidationError as exc:
        raise InvalidArguments(_describe_errors(exc)) from None
    return {name: getattr(model, name) for name in type(model).model_fields}


def _check_against_schema(tool: Tool, data: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(tool._schema_validator.iter_errors(data), key=lambda e: list(e.absolute_path))[:8]
    if errors:
        problems = [f"{'.'.join(str(p) for p in e.absolute_path) or 'arguments'}: {e.message[:200]}" for e in errors]
        raise InvalidArguments("; ".join(problems))
    return data


def _describe_errors(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False)[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated titles: they cost tokens and tell the model nothing."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    cleaned = strip(schema)
    cleaned.setdefault("properties", {})
    return dict(cleaned)


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before a Google-style ``Args:`` section) and
    per-argument help from that section."""
    description: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    base_indent: int | None = None
    in_args = False
    for line in inspect.cleandoc(doc).splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if not in_args:
            description.append(line)
            continue
        if not line.strip():
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        match = _ARG_LINE.match(line)
        if match and indent <= base_indent:
            current = match.group(1).lstrip("*")
            params[current] = match.group(3).strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
        else:
            in_args = False  # the section ended; the rest is prose again
            description.append(line)
    return "\n".join(description).strip(), params


def build_tool(
    func: Callable[..., Any],
    *,
    injectables: Iterable[type] = (),
    name: str | None = None,
    description: str | None = None,
    admin_only: bool = False,
    timeout: float | None = None,
    hints: Mapping[str, str] | None = None,
    plugin: str = "",
) -> Tool:
    """Describe ``func`` as a tool; raises ToolDefinitionError saying what is wrong."""
    tool_name = name or getattr(func, "__name__", "")
    if not TOOL_NAME.match(tool_name):
        raise ToolDefinitionError(f"tool name {tool_name!r} must match {TOOL_NAME.pattern}")
    doc = description or inspect.getdoc(func) or ""
    summary, arg_help = _split_docstring(doc)
    if not summary:
        raise ToolDefinitionError(f"tool {tool_name}: a docstring is required (it is the model's description)")
    try:
        hints_by_name = typing.get_type_hints(func)
    except Exception as exc:  # an unresolvable annotation; say which function
        raise ToolDefinitionError(f"tool {tool_name}: cannot resolve type hints: {exc}") from exc
    injectable = (RequestContext, *injectables)
    fields: dict[str, Any] = {}
    injected: dict[str, type] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name}: *args/**kwargs cannot be described to a model")
        annotation = hints_by_name.get(param.name, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            raise ToolDefinitionError(f"tool {tool_name}: parameter {param.name!r} needs a type annotation")
        service = next((t for t in injectable if annotation is t), None)
        if service is not None:
            injected[param.name] = service
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_help.get(param.name) or None))
    try:
        arguments = create_model(  # type: ignore[call-overload]
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        arguments.model_json_schema()
    except Exception as exc:  # pydantic cannot express a parameter type as JSON schema
        raise ToolDefinitionError(f"tool {tool_name}: arguments cannot be described as JSON: {exc}") from exc
    return Tool(
        name=tool_name,
        description=summary,
        func=func,
        arguments=arguments,
        injected=injected,
        is_async=inspect.iscoroutinefunction(func),
        admin_only=admin_only,
        timeout=timeout,
        hints=dict(hints or {}),
        plugin=plugin,
    )


class ToolRegistry:
    """Every tool Arium may offer, by name. Disabled names are remembered (so
    they can be listed) but never offered or called.

    Two kinds of tools live here. Registered ones (built-ins, plugins) are
    the set /reload rebuilds and swaps. Attached ones come and go with an
    outside connection (an MCP server's tools while it is up); a reload
    leaves them alone, and their owner attaches and detaches them.

    Admins can also switch tools off at run time (/tools): by tool name or
    by group (a plugin's name, ``mcp:SERVER``). A switched-off tool stays
    listed but is neither offered nor callable."""

    def __init__(self, services: Mapping[type, object] | None = None, disabled: Iterable[str] = ()) -> None:
        self._services: dict[type, object] = dict(services or {})
        self._disabled = frozenset(disabled)
        self._tools: dict[str, Tool] = {}
        self._attached: dict[str, Tool] = {}
        self._off: frozenset[str] = frozenset()
        self.skipped: list[str] = []  # disabled tools that were registered

    def register(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        admin_only: bool = False,
        timeout: float | None = None,
        hints: Mapping[str, str] | None = None,
        plugin: str = "",
    ) -> Tool | None:
        """Add a tool; returns None if configuration disabled it."""
        tool = build_tool(
            func,
            injectables=self._services,
            name=name,
            description=description,
            admin_only=admin_only,
            timeout=timeout,
            hints=hints,
            plugin=plugin,
        )
        if tool.name in self._tools or tool.name in self._attached:
            other = self._tools.get(tool.name) or self._attached[tool.name]
            raise ToolDefinitionError(
                f"tool {tool.name} is defined twice ({other.plugin or 'core'} and {plugin or 'core'})"
            )
        if self.is_disabled(tool):
            if tool.name not in self.skipped:
                self.skipped.append(tool.name)
            return None
        self._tools[tool.name] = tool
        return tool

    def is_disabled(self, tool: Tool) -> bool:
        """Disabled by configuration (BOT_TOOLS_DISABLED): by name or by group."""
        return tool.name in self._disabled or bool(tool.plugin and tool.plugin in self._disabled)

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def adopt(self, tool: Tool) -> None:
        """Add a tool another registry of the same services built (a reload
        carries tools over unchanged)."""
        if tool.name in self._tools or tool.name in self._attached:
            raise ToolDefinitionError(f"tool {tool.name} is defined twice")
        self._tools[tool.name] = tool

    def attach(self, tool: Tool) -> bool:
        """Offer a tool an outside connection provides, until ``detach``.
        False if its name is taken or configuration disabled it."""
        if tool.name in self._tools or tool.name in self._attached:
            return False
        if self.is_disabled(tool):
            if tool.name not in self.skipped:
                self.skipped.append(tool.name)
            return False
        self._attached[tool.name] = tool
        return True

    def detach(self, name: str) -> None:
        self._attached.pop(name, None)

    def fork(self, keep: Callable[[Tool], bool]) -> ToolRegistry:
        """A new registry with the same services and disabled names, holding
        the registered tools ``keep`` accepts: where a reload builds the next
        set of tools while this one keeps serving."""
        other = ToolRegistry(self._services, self._disabled)
        other._tools = {name: tool for name, tool in list(self._tools.items()) if keep(tool)}
        other.skipped = list(self.skipped)
        return other

    def replace_tools(self, other: ToolRegistry) -> None:
        """Serve ``other``'s registered tools from now on. One assignment, so
        a turn sees either the old set or the new one; a turn that already
        offered a removed tool is told it is unknown if the model still calls
        it. Attached tools and run-time switches stay as they are."""
        self._tools = {name: tool for name, tool in other._tools.items() if name not in self._attached}
        self.skipped = list(other.skipped)

    # Run-time switches (/tools) -------------------------------------------

    def switch_off(self, names: Iterable[str]) -> None:
        """Exactly these tool or group names are off from now on."""
        self._off = frozenset(names)

    @property
    def switched_off(self) -> frozenset[str]:
        return self._off

    def is_on(self, tool: Tool) -> bool:
        return tool.name not in self._off and not (tool.plugin and tool.plugin in self._off)

    # Lookup -----------------------------------------------------------------

    def get(self, name: str) -> Tool | None:
        """The tool a call names, if it may be called now."""
        tool = self._tools.get(name) or self._attached.get(name)
        return tool if tool is not None and self.is_on(tool) else None

    def bind(self, tool: Tool, ctx: RequestContext, arguments: Mapping[str, Any]) -> Callable[[], Any]:
        """The call, ready to run: validated arguments plus the injected context and services."""
        if tool.input_schema is not None:
            return functools.partial(tool.func, ctx, dict(arguments))
        injected = {
            name: ctx if kind is RequestContext else self._services[kind] for name, kind in tool.injected.items()
        }
        return functools.partial(tool.func, **injected, **arguments)

    def tools(self) -> list[Tool]:
        """Every tool, on or off."""
        return [*self._tools.values(), *self._attached.values()]

    def registered_tools(self) -> list[Tool]:
        """The tools /reload rebuilds (not the attached ones)."""
        return list(self._tools.values())

    def visible(self, ctx: RequestContext) -> list[Tool]:
        return [t for t in self.tools() if t.visible_to(ctx) and self.is_on(t)]

    def specs_for(self, ctx: RequestContext) -> tuple[ToolSpec, ...]:
        """What this user's model may see: admin-only tools only for admins."""
        return tuple(t.spec() for t in self.visible(ctx))

    def __len__(self) -> int:
        return len(self._tools) + len(self._attached)
