"""/agents (admins: multi-agent mode on or off, and every agent) and /agent
(anyone: the agents, and the one pinned to this chat), written once for
every channel: the arguments and the answers. A channel sends ``Answer.text``
(Telegram as HTML; the console through bot.i18n.plain, which is why only
<b> is used) and audits ``Answer.outcome`` for the admin command."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import bot.admin.strings  # noqa: F401  (admin_usage)
import bot.agents.command_strings  # noqa: F401  (registers the strings)
from bot.agents.profiles import AgentProfile
from bot.context import RequestContext
from bot.errors import StorageError
from bot.i18n import t

if TYPE_CHECKING:  # the desk pulls in the router and the orchestrator; only bots with agents build it
    from bot.agents.desk import AgentDesk

log = logging.getLogger(__name__)

# Under Telegram's 4096 characters, with room for the markup and for
# characters that count twice in UTF-16 (emoji).
TEXT_LIMIT = 3500
AUTO = "auto"


@dataclass(frozen=True)
class Answer:
    text: str
    outcome: str  # what happened, for the audit log and the logs


AgentsVerb = Literal["show", "on", "off"]


@dataclass(frozen=True)
class AgentChoice:
    verb: Literal["show", "pin", "auto"]
    name: str = ""


def parse_agents_args(args: Sequence[str]) -> AgentsVerb | None:
    """``/agents``, ``/agents on``, ``/agents off``; None when malformed."""
    if not args:
        return "show"
    word = args[0].lower()
    if len(args) == 1 and word == "on":
        return "on"
    if len(args) == 1 and word == "off":
        return "off"
    return None


def parse_agent_args(args: Sequence[str]) -> AgentChoice | None:
    """``/agent``, ``/agent NAME`` (``@NAME`` too, as in a mention), ``/agent auto``; None when malformed."""
    if not args:
        return AgentChoice("show")
    name = args[0].strip().lstrip("@")
    if len(args) != 1 or not name:
        return None
    if name.lower() == AUTO:
        return AgentChoice("auto")
    return AgentChoice("pin", name)


# /agents --------------------------------------------------------------------------


async def agents_command(desk: AgentDesk | None, ctx: RequestContext, args: Sequence[str]) -> Answer:
    verb = parse_agents_args(args)
    language = ctx.language
    if verb is None:
        return Answer(t("admin_usage", language, usage=t("agents_usage", language)), "usage shown")
    if desk is None:
        return Answer(t("agents_none_configured", language), "shown" if verb == "show" else "refused: no agents")
    if verb == "show":
        return Answer(agents_overview(desk, language), "shown")
    return await _switch(desk, ctx, multi=verb == "on")


async def _switch(desk: AgentDesk, ctx: RequestContext, *, multi: bool) -> Answer:
    state = "on" if multi else "off"
    if desk.multi == multi:
        # Not stored again: a mode that only the configuration set stays the configuration's.
        return Answer(t(f"agents_already_{state}", ctx.language), f"unchanged: {state}")
    try:
        await desk.set_mode(multi, by=ctx.user_id)
    except StorageError as exc:
        log.error("/agents %s could not save: %s", state, exc)
        return Answer(t("agents_not_saved", ctx.language), "failed: storage")
    return Answer(t(f"agents_switched_{state}", ctx.language), state)


def agents_overview(desk: AgentDesk, language: str) -> str:
    """Every agent (the default first) with what it may use, under the mode."""
    state = t("agents_state_on" if desk.multi else "agents_state_off", language)
    head = [t("agents_header", language, state=state), ""]
    entries = ["\n".join(_profile_lines(profile, language)) for profile in desk.book]
    return _fit(head, entries, ["", t("agents_help", language)], language)


def _profile_lines(profile: AgentProfile, language: str) -> list[str]:
    title = f"<b>{html.escape(profile.name)}</b>"
    if profile.is_default:
        title += " " + t("agents_default_mark", language)
    details = []
    if profile.tier:
        details.append(t("agents_tier", language, tier=html.escape(profile.tier)))
    details.append(t("agents_tools", language, tools=_tools_text(profile, language)))
    if profile.keywords:
        details.append(t("agents_keywords", language, keywords=html.escape(", ".join(profile.keywords))))
    if profile.orchestrator:
        details.append(t("agents_orchestrator", language))
    return [f"{title} — {html.escape(profile.description)}", "   " + " · ".join(details)]


def _tools_text(profile: AgentProfile, language: str) -> str:
    if profile.tools is None:
        return t("agents_tools_all", language)
    if not profile.tools:
        return t("agents_tools_none", language)
    return html.escape(", ".join(sorted(profile.tools)))


# /agent ---------------------------------------------------------------------------


async def agent_command(desk: AgentDesk | None, ctx: RequestContext, args: Sequence[str]) -> Answer:
    language = ctx.language
    if desk is None:
        return Answer(t("agent_none", language), "no agents")
    choice = parse_agent_args(args)
    if choice is None:
        return Answer(t("agent_usage", language), "usage shown")
    if choice.verb == "show":
        return Answer(agent_list(desk, ctx), "shown")
    # A pin decides who answers everyone in the chat, so in a group it is the admins' call.
    if not ctx.is_private and not ctx.is_admin:
        return Answer(t("agent_group_admins_only", language), "refused: group")
    if choice.verb == "auto":
        return await _unpin(desk, ctx)
    profile = desk.book.get(choice.name)
    if profile is None:
        names = ", ".join(html.escape(p.name) for p in desk.book)
        return Answer(t("agent_unknown", language, name=html.escape(choice.name), names=names), "refused: unknown")
    return await _pin(desk, ctx, profile)


async def _pin(desk: AgentDesk, ctx: RequestContext, profile: AgentProfile) -> Answer:
    try:
        await desk.pin(ctx.chat_id, profile, by=ctx.user_id)
    except StorageError as exc:
        log.error("/agent %s could not save: %s", profile.name, exc)
        return Answer(t("agent_not_saved", ctx.language), "failed: storage")
    log.info("chat %s pinned agent %s (by %s)", ctx.chat_id, profile.name, ctx.user_id)
    key = "agent_pinned" if desk.multi else "agent_pinned_mode_off"
    return Answer(t(key, ctx.language, name=f"<b>{html.escape(profile.name)}</b>"), f"pinned {profile.name}")


async def _unpin(desk: AgentDesk, ctx: RequestContext) -> Answer:
    try:
        await desk.unpin(ctx.chat_id)
    except StorageError as exc:
        log.error("/agent auto could not save: %s", exc)
        return Answer(t("agent_not_saved", ctx.language), "failed: storage")
    log.info("chat %s unpinned its agent (by %s)", ctx.chat_id, ctx.user_id)
    return Answer(t("agent_unpinned" if desk.multi else "agent_unpinned_mode_off", ctx.language), "unpinned")


def agent_list(desk: AgentDesk, ctx: RequestContext) -> str:
    """The agents, ``name — description``, the chat's pinned one marked."""
    language = ctx.language
    pinned = desk.pinned(ctx.chat_id)
    state = t("agents_state_on" if desk.multi else "agents_state_off", language)
    entries = []
    for profile in desk.book:
        line = f"• <b>{html.escape(profile.name)}</b> — {html.escape(profile.description)}"
        if pinned is not None and profile.name == pinned.name:
            line += "  " + t("agent_pinned_mark", language)
        entries.append(line)
    if not desk.multi:
        note = t("agent_off_note", language)
    else:
        note = "" if pinned is not None else t("agent_auto_note", language)
    tail = ["", *([note] if note else []), t("agent_help", language)]
    return _fit([t("agent_header", language, state=state), ""], entries, tail, language)


def _fit(head: list[str], entries: list[str], tail: list[str], language: str) -> str:
    """``head``, as many ``entries`` as fit in one message (then how many
    more there are), ``tail``: a long list never makes the answer fail."""
    # Room for the "… and N more" line is kept whether it is needed or not.
    budget = TEXT_LIMIT - sum(len(line) + 1 for line in head + tail) - len(t("agents_more", language, n=9999)) - 1
    shown: list[str] = []
    for index, entry in enumerate(entries):
        if len(entry) + 1 > budget:
            shown.append(t("agents_more", language, n=len(entries) - index))
            break
        shown.append(entry)
        budget -= len(entry) + 1
    return "\n".join(head + shown + tail)
