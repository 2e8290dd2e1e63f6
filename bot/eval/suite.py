"""Suites: YAML files of tasks, validated with pydantic so a mistake in a
suite is one clear line naming the task and the field.

    name: smoke
    time_limits: {chat: 60, memory: 180}   # seconds per category (optional)
    tasks:
      - id: greet
        category: chat
        turns: ["hello there"]             # "/new" starts a fresh conversation
        expect:
          contains: ["hello"]              # all, case-insensitive
          not_contains: ["error"]
          regex: "h.llo"
          tool: create_reminder            # called during the task (or a list)
          tool_args: {create_reminder: ["9:00"]}   # substrings of its arguments
          no_tools: false                  # true: the task must call no tool
          rubric: "greets the user politely"       # graded by a judge model
          agent: coder                     # multi-agent mode: this agent answered the last turn
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import pytz
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ConfigError
from bot.settings import AGENT_NAME

DEFAULT_TIME_LIMIT = 120.0  # seconds for one task, every turn included
DEFAULT_MAX_TOOL_CALLS = 12
NEW_CONVERSATION = "/new"
AGENT_CHECK = "agent: "  # an expect.agent check's name starts so; compare.py counts routing accuracy by it

Strings = Annotated[list[str], Field(default_factory=list)]


def _listed(value: Any) -> Any:
    """A single string where a list is expected is a list of one."""
    return [value] if isinstance(value, str) else value


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contains: Strings
    not_contains: Strings
    regex: str | None = None
    tool: Strings
    tool_args: dict[str, list[str]] = Field(default_factory=dict)
    no_tools: bool = False
    rubric: str | None = None
    agent: str | None = None  # the agent that must answer the task's last turn ("assistant": the default one)

    _listify = field_validator("contains", "not_contains", "tool", mode="before")(_listed)

    @field_validator("tool_args", mode="before")
    @classmethod
    def _listify_args(cls, value: Any) -> Any:
        return {k: _listed(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower()  # as /agent and the router read names
        if not AGENT_NAME.match(name):
            raise ValueError(f"agent {value!r} is not an agent name (lowercase letters, digits, '-' or '_')")
        return name

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex {value!r} does not compile: {exc}") from None
        return value

    @model_validator(mode="after")
    def _says_something(self) -> Expect:
        if not (self.contains or self.not_contains or self.regex or self.tool or self.tool_args
                or self.no_tools or self.rubric or self.agent):
            raise ValueError("expect names no check: a task that cannot fail measures nothing")
        if self.no_tools and (self.tool or self.tool_args):
            raise ValueError("no_tools contradicts tool/tool_args")
        return self


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    category: str = Field(default="general", min_length=1, max_length=32)
    turns: list[str] = Field(min_length=1, max_length=20)
    expect: Expect
    time_limit: float | None = Field(default=None, gt=0, le=3600)
    max_tool_calls: int | None = Field(default=None, ge=0, le=100)
    language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in pytz.all_timezones_set:
            raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Berlin)")
        return value

    @field_validator("turns")
    @classmethod
    def _real_turns(cls, turns: list[str]) -> list[str]:
        if not any(turn.strip() and turn.strip() != NEW_CONVERSATION for turn in turns):
            raise ValueError("turns hold no user message")
        return turns


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    time_limits: dict[str, float] = Field(default_factory=dict)  # category -> seconds
    max_tool_calls: int = Field(default=DEFAULT_MAX_TOOL_CALLS, ge=0, le=100)
    tasks: list[Task] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        for task in self.tasks:
            if task.id in seen:
                raise ValueError(f"task id {task.id!r} is used twice")
            seen.add(task.id)
        return self

    def time_limit(self, task: Task) -> float:
        return task.time_limit or self.time_limits.get(task.category) or DEFAULT_TIME_LIMIT

    def tool_cap(self, task: Task) -> int:
        return task.max_tool_calls if task.max_tool_calls is not None else self.max_tool_calls


def load_suite(path: Path) -> Suite:
    """The suite in ``path``; ConfigError naming the problem otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the suite {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with name and tasks")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_problem(data, err) for err in exc.errors()[:5])) from None


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's message, with the line and column, on one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _problem(data: dict[str, Any], err: Any) -> str:
    location = list(err["loc"])
    where = ".".join(str(part) for part in location)
    if location[:1] == ["tasks"] and len(location) > 1 and isinstance(location[1], int):
        tasks = data.get("tasks") or []
        task = tasks[location[1]] if location[1] < len(tasks) and isinstance(tasks[location[1]], dict) else {}
        where = f"task {task.get('id', location[1])!r}" + (f" {'.'.join(map(str, location[2:]))}" if location[2:] else "")
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
