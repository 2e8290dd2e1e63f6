"""Agent profiles: what each agent is for, what it adds to the system
prompt, which tools and model tier it uses. Built once from the TOML file's
``[agents.NAME]`` tables; the default agent is the assistant itself."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from bot.errors import ConfigError, PromptNotFound
from bot.prompts import PromptRegistry
from bot.settings import AgentSettings
from bot.tools.registry import Tool

DEFAULT_AGENT = "assistant"


@dataclass(frozen=True)
class AgentProfile:
    name: str
    description: str
    instructions: str = ""  # inline text, or a prompt template's name
    tools: frozenset[str] | None = None  # tool or group names; None: every tool
    tier: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    keywords: tuple[str, ...] = ()
    orchestrator: bool = False

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_AGENT

    def allows(self, tool: Tool) -> bool:
        """May this agent call ``tool``? By the tool's name or its group (a plugin, ``mcp:SERVER``)."""
        if self.tools is None:
            return True
        return tool.name in self.tools or bool(tool.plugin and tool.plugin in self.tools)

    def instruction_text(self, prompts: PromptRegistry, variables: Mapping[str, object]) -> str:
        """What this agent adds to the system prompt: its template rendered
        with the system prompt's variables, or its inline text."""
        if not self.instructions:
            return ""
        if _TEMPLATE_NAME.match(self.instructions):
            try:
                template = prompts.get(self.instructions)
            except PromptNotFound:
                return self.instructions  # a one-word instruction, not a template
            return template.render({name: variables.get(name, "") for name in template.variables})
        return self.instructions


def _tools_of(entry: AgentSettings) -> frozenset[str] | None:
    """The tools an agent lists; unset means every tool, except for an
    orchestrator, which plans and delegates and does the work through others."""
    if entry.tools is not None:
        return frozenset(entry.tools)
    return frozenset() if entry.orchestrator else None


_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

DEFAULT_PROFILE = AgentProfile(DEFAULT_AGENT, "General assistant: anything the other agents are not for.")


class AgentBook:
    """Every agent by name, the default one first."""

    def __init__(self, profiles: Iterable[AgentProfile]) -> None:
        self._by_name: dict[str, AgentProfile] = {DEFAULT_AGENT: DEFAULT_PROFILE}
        for profile in profiles:
            self._by_name[profile.name] = profile

    @classmethod
    def from_settings(cls, agents: Mapping[str, AgentSettings]) -> AgentBook:
        return cls(
            AgentProfile(
                name=name,
                description=entry.description.strip(),
                instructions=entry.instructions.strip(),
                tools=_tools_of(entry),
                tier=entry.models,
                temperature=entry.temperature,
                max_tokens=entry.max_tokens,
                keywords=tuple(k.strip().casefold() for k in entry.keywords if k.strip()),
                orchestrator=entry.orchestrator,
            )
            for name, entry in agents.items()
        )

    @property
    def default(self) -> AgentProfile:
        return self._by_name[DEFAULT_AGENT]

    def get(self, name: str) -> AgentProfile | None:
        return self._by_name.get(name.strip().lower())

    def __iter__(self) -> Iterator[AgentProfile]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def specialists(self) -> list[AgentProfile]:
        """Every agent but the default one."""
        return [profile for profile in self._by_name.values() if not profile.is_default]

    def delegates(self) -> list[AgentProfile]:
        """The agents an orchestrator may hand a step to (not another orchestrator)."""
        return [profile for profile in self._by_name.values() if not profile.orchestrator]

    def check_tiers(self, tier_names: Iterable[str]) -> None:
        """An agent's ``models`` must name a tier of the chain: a typo fails at start, naming it."""
        tiers = set(tier_names)
        for profile in self.specialists():
            if profile.tier is not None and profile.tier not in tiers:
                raise ConfigError(
                    f"agent {profile.name!r} uses models = {profile.tier!r}, but the chain has no such tier "
                    f"(tiers: {', '.join(sorted(tiers))})"
                )

    def unknown_tools(self, tools: Iterable[Tool]) -> list[str]:
        """Warnings for tool names an agent lists that no loaded tool or group
        has (an MCP server's tools may still come, so this is not an error)."""
        known: set[str] = set()
        for tool in tools:
            known.add(tool.name)
            if tool.plugin:
                known.add(tool.plugin)
        warnings = []
        for profile in self.specialists():
            unknown = sorted(n for n in profile.tools or () if n not in known and not n.startswith("mcp:"))
            if unknown:
                warnings.append(f"agent {profile.name!r} lists tools that are not loaded: {', '.join(unknown)}")
        return warnings
