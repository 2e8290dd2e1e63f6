"""Telegram side of access control and limits: the admin commands /allow,
/disallow, /invite, /ban, /unban, /budget and /audit, and the two facts the
channel's gate needs from an update (the /start payload, and whether the
message goes to the model)."""

from __future__ import annotations

import html
import logging
import re
from datetime import timedelta

import pytz
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

import bot.gates.access_strings  # noqa: F401  (registers the strings)
from bot.gates.access import AccessControl, AccessMode, Change, Status, UserRef, parse_user_ref
from bot.admin.audit import MAX_AUDIT_ENTRIES, AuditLine, AuditView
from bot.gates.limits import DailyBudget, format_tokens
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.channels.telegram.render import utf16_len
from bot.context import RequestContext
from bot.runtime.events import EventBus
from bot.i18n import t
from bot.storage.repositories import UserRecord

log = logging.getLogger(__name__)

USAGE = {
    "allow": "/allow <user id or @username>",
    "disallow": "/disallow <user id or @username>",
    "invite": "/invite [hours valid, 0 = never expires, at most 8784]",
    "ban": "/ban <user id or @username>",
    "unban": "/unban <user id or @username>",
    "budget": "/budget <user id or @username> [tokens per day | default | unlimited] (e.g. 50000 or 50k)",
    "audit": f"/audit [how many, 1-{MAX_AUDIT_ENTRIES}]",
}
AUDIT_DEFAULT = 15
# users.token_budget is a 32-bit INTEGER column.
MAX_BUDGET = 2**31 - 1
MAX_INVITE_HOURS = 24 * 366
_BUDGET = re.compile(r"([0-9]{1,10})([kKmM]?)")
_SMALL_NUMBER = re.compile(r"[0-9]{1,4}")
# Room left under Telegram's 4096 for the header.
AUDIT_TEXT_LIMIT = 3900
AUDIT_ARGS_SHOWN = 80
AUDIT_OUTCOME_SHOWN = 120


# --- what the gate needs to know about an update -------------------------------------


def start_payload(update: Update) -> str | None:
    """The argument of ``/start <payload>`` (a deep link's payload), else None."""
    message = update.message
    if message is None or not message.text:
        return None
    parts = message.text.split(maxsplit=2)
    if len(parts) < 2 or parts[0].split("@", 1)[0].lower() != "/start":
        return None
    return parts[1]


def reaches_model(update: Update) -> bool:
    """A new message that the bot would hand to the model: plain text (not
    a command) or a document. Commands, buttons and edits spend no tokens."""
    message = update.message
    if message is None:
        return False
    if message.document is not None:
        return True
    return bool(message.text) and not (message.text or "").startswith("/")


# --- parsing admin arguments --------------------------------------------------------


def parse_budget(text: str) -> int | None:
    """Tokens per day (``50000``, ``50k``, ``2m``), ``0``/``unlimited`` for no
    limit, ``default`` for the configured default (None). ValueError for
    anything else, including numbers the 32-bit column cannot hold."""
    word = text.strip().lower()
    if word == "default":
        return None
    if word == "unlimited":
        return 0
    match = _BUDGET.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a token amount: {text!r}")
    value = int(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    if value > MAX_BUDGET:
        raise ValueError(f"at most {MAX_BUDGET} tokens")
    return value


def parse_small_number(text: str, low: int, high: int) -> int | None:
    if not _SMALL_NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def who(user: UserRecord | None, ref: UserRef) -> str:
    """``Ann (@ann, id 7)``, or how the admin named them when the bot knows no more."""
    if user is None:
        return f"user {ref}" if ref.user_id is not None else f"@{ref.username}"
    handle = f"@{user.username}, " if user.username else ""
    name = " ".join(p for p in (user.first_name, user.last_name or "") if p)
    if not name and not handle:  # named by id before they ever wrote
        return f"user {user.id}"
    return f"{name or 'user'} ({handle}id {user.id})"


def _target_id(change: Change) -> str:
    return str(change.user.id) if change.user else str(change.ref)


# --- the commands --------------------------------------------------------------------


class AccessCommands(AdminCommands):
    def __init__(self, events: EventBus, access: AccessControl, budget: DailyBudget, audit: AuditView) -> None:
        super().__init__(events)
        self._access = access
        self._budget = budget
        self._audit = audit

    def register_admin(self, application: Application) -> None:
        self.command(application, "allow", self._allow)
        self.command(application, "disallow", self._disallow)
        self.command(application, "invite", self._invite)
        self.command(application, "ban", self._ban)
        self.command(application, "unban", self._unban)
        self.command(application, "budget", self._budget_command)
        self.command(application, "audit", self._audit_command)

    # /allow /disallow ---------------------------------------------------------------

    async def _allow(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        ref = parse_user_ref(args[0]) if len(args) == 1 else None
        if ref is None:
            return await self.usage(update, ctx, USAGE["allow"])
        change = await self._access.allow(ref)
        if unknown := await self._unknown(update, ctx, change):
            return unknown
        name = who(change.user, ref)
        key = {Status.DONE: "access_allowed", Status.ALREADY: "access_already_allowed", Status.ADMIN: "access_admin_always"}
        lines = [t(key[change.status], ctx.language, user=name)]
        if self._access.mode is AccessMode.OPEN and change.status is not Status.ADMIN:
            lines.append(t("access_open_note", ctx.language))
        await reply(update, "\n\n".join(lines))
        if change.status is Status.DONE and self._access.mode is AccessMode.ALLOWLIST:
            await self._tell_admitted(context, change.user)
        return {Status.DONE: "allowed", Status.ALREADY: "already allowed", Status.ADMIN: "admin"}[
            change.status
        ] + f" {_target_id(change)}"

    async def _disallow(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        ref = parse_user_ref(args[0]) if len(args) == 1 else None
        if ref is None:
            return await self.usage(update, ctx, USAGE["disallow"])
        change = await self._access.disallow(ref)
        if unknown := await self._unknown(update, ctx, change):
            return unknown
        key = {Status.DONE: "access_disallowed", Status.ALREADY: "access_not_allowed", Status.ADMIN: "access_admin_always"}
        await reply(update, t(key[change.status], ctx.language, user=who(change.user, ref)))
        return {Status.DONE: "disallowed", Status.ALREADY: "was not allowed", Status.ADMIN: "refused: admin"}[
            change.status
        ] + f" {_target_id(change)}"

    async def _tell_admitted(self, context: ContextTypes.DEFAULT_TYPE, user: UserRecord | None) -> None:
        # Only users who wrote before can be messaged (Telegram forbids a
        # bot's first word); placeholders made by /allow <id> are inactive.
        if user is None or not user.active:
            return
        try:
            await context.bot.send_message(user.id, t("access_you_are_in", user.language))
        except TelegramError as exc:
            log.info("could not tell user %s they were admitted: %s", user.id, exc)

    # /ban /unban ----------------------------------------------------------------------

    async def _ban(self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]) -> str:
        ref = parse_user_ref(args[0]) if len(args) == 1 else None
        if ref is None:
            return await self.usage(update, ctx, USAGE["ban"])
        change = await self._access.ban(ref)
        if unknown := await self._unknown(update, ctx, change):
            return unknown
        key = {Status.DONE: "access_banned", Status.ALREADY: "access_already_banned", Status.ADMIN: "access_cannot_ban_admin"}
        await reply(update, t(key[change.status], ctx.language, user=who(change.user, ref)))
        return {Status.DONE: "banned", Status.ALREADY: "already banned", Status.ADMIN: "refused: admin"}[
            change.status
        ] + f" {_target_id(change)}"

    async def _unban(self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]) -> str:
        ref = parse_user_ref(args[0]) if len(args) == 1 else None
        if ref is None:
            return await self.usage(update, ctx, USAGE["unban"])
        change = await self._access.unban(ref)
        if unknown := await self._unknown(update, ctx, change):
            return unknown
        key = {Status.DONE: "access_unbanned", Status.ALREADY: "access_not_banned"}
        await reply(update, t(key[change.status], ctx.language, user=who(change.user, ref)))
        return {Status.DONE: "unbanned", Status.ALREADY: "was not banned"}[change.status] + f" {_target_id(change)}"

    async def _unknown(self, update: Update, ctx: RequestContext, change: Change) -> str | None:
        """Answers "no such user" and returns the audit outcome; None when the user was found."""
        if change.status is not Status.UNKNOWN:
            return None
        ref = change.ref
        if ref.username is not None:
            await reply(update, t("access_unknown_username", ctx.language, username=ref.username))
        else:
            await reply(update, t("access_unknown_id", ctx.language, user_id=ref.user_id))
        return f"unknown user {ref}"

    # /invite ----------------------------------------------------------------------------

    async def _invite(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        ttl: timedelta | None = None
        if len(args) > 1:
            return await self.usage(update, ctx, USAGE["invite"])
        if args:
            hours = parse_small_number(args[0], 0, MAX_INVITE_HOURS)
            if hours is None:
                return await self.usage(update, ctx, USAGE["invite"])
            ttl = timedelta(hours=hours)  # 0: never expires
        invite = await self._access.create_invite(ctx.user_id, ttl)
        link = f"https://t.me/{context.bot.username}?start={invite.code}"
        if invite.expires_at is not None:
            when = invite.expires_at.astimezone(pytz.timezone(ctx.timezone)).strftime("%Y-%m-%d %H:%M")
            validity = t("access_invite_until", ctx.language, when=when, zone=ctx.timezone)
        else:
            validity = t("access_invite_forever", ctx.language)
        lines = [t("access_invite_created", ctx.language, link=link, validity=validity)]
        if self._access.mode is AccessMode.OPEN:
            lines.append(t("access_open_note", ctx.language))
        await reply(update, "\n\n".join(lines))
        # The audit keeps a prefix only: the full code is a credential.
        expiry = invite.expires_at.isoformat(timespec="minutes") if invite.expires_at else "never"
        return f"invite {invite.code[:4]}… created, expires {expiry}"

    # /budget ----------------------------------------------------------------------------

    async def _budget_command(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        ref = parse_user_ref(args[0]) if len(args) in (1, 2) else None
        try:
            amount = parse_budget(args[1]) if len(args) == 2 else None
        except ValueError:
            ref = None
        if ref is None:
            return await self.usage(update, ctx, USAGE["budget"])
        if len(args) == 1:
            user = await self._access.find(ref)
            if user is None:
                return await self._unknown(update, ctx, Change(Status.UNKNOWN, ref)) or ""
            await reply(update, await self._describe_budget(user, ref, ctx.language))
            return f"shown {user.id}"
        change = await self._access.set_budget(ref, amount)
        if unknown := await self._unknown(update, ctx, change):
            return unknown
        assert change.user is not None
        await reply(update, await self._describe_budget(change.user, ref, ctx.language))
        shown = "default" if amount is None else ("unlimited" if amount == 0 else str(amount))
        return f"budget {change.user.id} = {shown}"

    async def _describe_budget(self, user: UserRecord, ref: UserRef, language: str) -> str:
        state = await self._budget.state(user.id, user.token_budget)
        if self._access.is_admin(user.id):
            source = t("budget_source_admin", language)
        elif user.token_budget is None:
            source = t("budget_source_default", language)
        else:
            source = t("budget_source_own", language)
        limit = (
            t("budget_unlimited", language)
            if state.limit == 0
            else t("budget_tokens", language, count=format_tokens(state.limit, language))
        )
        return t("budget_shown", language, user=who(user, ref), limit=limit, source=source, used=format_tokens(state.used, language))

    # /audit -----------------------------------------------------------------------------

    async def _audit_command(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        count = AUDIT_DEFAULT
        if len(args) > 1:
            return await self.usage(update, ctx, USAGE["audit"])
        if args:
            parsed = parse_small_number(args[0], 1, MAX_AUDIT_ENTRIES)
            if parsed is None:
                return await self.usage(update, ctx, USAGE["audit"])
            count = parsed
        lines = await self._audit.latest(count)
        if not lines:
            await reply(update, t("audit_empty", ctx.language))
            return "empty"
        await reply(update, render_audit(lines, ctx.timezone, ctx.language), html=True)
        return f"shown {len(lines)}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_audit(lines: list[AuditLine], tz_name: str, language: str) -> str:
    """One line per action: time, admin, command with arguments, outcome.
    Everything from the database is escaped; lines that would not fit one
    Telegram message are left off (the oldest ones)."""
    zone = pytz.timezone(tz_name)
    out = [t("audit_header", language, zone=html.escape(tz_name))]
    size = utf16_len(out[0])
    for line in lines:
        when = line.at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        admin = f"@{line.admin.username}" if line.admin and line.admin.username else str(line.admin_id)
        command = f"/{line.action} {_clip(line.arguments, AUDIT_ARGS_SHOWN)}".rstrip()
        text = (
            f"<code>{when}</code> {html.escape(admin)}: <code>{html.escape(command)}</code>"
            f" → {html.escape(_clip(line.outcome, AUDIT_OUTCOME_SHOWN))}"
        )
        if size + utf16_len(text) + 1 > AUDIT_TEXT_LIMIT:
            break
        out.append(text)
        size += utf16_len(text) + 1
    return "\n".join(out)
