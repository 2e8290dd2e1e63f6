"""Who may use the bot: bans, the allow-list with one-time invites, and the
admin operations that change them. Channel-agnostic: the Telegram side
parses commands and renders these results.

Roles live in ``users.role`` and admission in ``users.allowed``; the context
middleware reads the user row on every message (nothing caches it), so a
ban or an admission takes effect with the user's very next message."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import bot.gates.access_strings  # noqa: F401  (registers the strings)
from bot.gates.chain import GateRequest, NoticeLimiter, Verdict
from bot.auth import AuthProvider, Role
from bot.i18n import t
from bot.storage.invites import InviteRecord, InviteRepository, Redemption
from bot.storage.repositories import UserRecord, UserRepository

log = logging.getLogger(__name__)

Now = Callable[[], datetime]

# A stranger or a banned user hears why once a day, then the bot is silent:
# a reminder the next day is helpful, one per message is an amplifier. Kept
# in memory (no write per refused message, no migration); after a restart
# they may hear it once more, which is harmless.
REFUSAL_NOTICE_INTERVAL = 24 * 3600.0
# Answers to bad invite codes, per user: enough to correct a typo, too few to
# flood (codes carry 96 random bits; guessing is hopeless anyway).
INVITE_NOTICE_INTERVAL = 60.0

# Telegram user ids are positive and below 2**52 today; BigInteger holds 2**63-1.
MAX_USER_ID = 2**63 - 1
_USER_ID = re.compile(r"[0-9]{1,19}")
# Telegram usernames: 5-32 of a-z, 0-9 and _, starting with a letter (a few
# are shorter, so accept from 1). The @ is required: a bare word is more
# likely a typo than a name.
_USERNAME = re.compile(r"@([A-Za-z][A-Za-z0-9_]{0,31})")
# Deep-link payloads are 1-64 of A-Z a-z 0-9 _ - (Bot API, "Deep linking").
_INVITE_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AccessMode(StrEnum):
    OPEN = "open"
    ALLOWLIST = "allowlist"


@dataclass(frozen=True)
class UserRef:
    """How an admin named a user: a numeric id or a @username."""

    user_id: int | None = None
    username: str | None = None

    def __str__(self) -> str:
        return str(self.user_id) if self.user_id is not None else f"@{self.username}"


def parse_user_ref(text: str) -> UserRef | None:
    """``12345`` or ``@name``; None for anything else. ASCII
    digits only: ``int()`` would also take Arabic-Indic or full-width ones."""
    value = text.strip()
    if _USER_ID.fullmatch(value):
        number = int(value)
        return UserRef(user_id=number) if 0 < number <= MAX_USER_ID else None
    match = _USERNAME.fullmatch(value)
    return UserRef(username=match.group(1)) if match else None


def new_invite_code() -> str:
    """16 URL-safe characters (96 random bits), valid as a deep-link payload."""
    return secrets.token_urlsafe(12)


class Status(StrEnum):
    DONE = "done"
    ALREADY = "already"  # nothing to change
    ADMIN = "admin"  # the target is an admin from BOT_ADMIN_IDS
    UNKNOWN = "unknown"  # no such user (an unseen @username, or an unseen id where none is created)


@dataclass(frozen=True)
class Change:
    status: Status
    ref: UserRef
    user: UserRecord | None = None


# --- gates --------------------------------------------------------------------


class BanCheck:
    """Banned users never reach the model; they are told once per interval."""

    name = "banned"

    def __init__(self, notices: NoticeLimiter) -> None:
        self._notices = notices

    async def check(self, request: GateRequest) -> Verdict | None:
        ctx = request.ctx
        if ctx.role is not Role.BANNED:
            return None
        notify = self._notices.should_notify(("banned", ctx.user_id))
        return Verdict(False, t("banned", ctx.language) if notify else None)


class AllowListCheck:
    """In allow-list mode only admins and admitted users get through. A
    stranger may be admitted on the spot by ``/start <invite code>``."""

    name = "allowlist"

    def __init__(
        self,
        mode: AccessMode,
        invites: InviteRepository,
        notices: NoticeLimiter,
        invite_notices: NoticeLimiter,
        now: Now,
    ) -> None:
        self._mode = mode
        self._invites = invites
        self._notices = notices
        self._invite_notices = invite_notices
        self._now = now

    async def check(self, request: GateRequest) -> Verdict | None:
        ctx = request.ctx
        if self._mode is AccessMode.OPEN or ctx.is_admin or ctx.allowed:
            return None
        if request.start_payload is not None:
            return await self._redeem(request)
        notify = self._notices.should_notify(("stranger", ctx.user_id))
        return Verdict(False, t("access_stranger", ctx.language, user_id=ctx.user_id) if notify else None)

    async def _redeem(self, request: GateRequest) -> Verdict:
        ctx, code = request.ctx, request.start_payload or ""
        result = (
            await self._invites.redeem(code, ctx.user_id, now=self._now())
            if _INVITE_CODE.fullmatch(code)
            else Redemption.UNKNOWN
        )
        if result is Redemption.ADMITTED:
            log.info("user %s joined with an invite", ctx.user_id)
            self._notices.forget(("stranger", ctx.user_id))
            return Verdict(True, t("access_invite_welcome", ctx.language))
        notify = self._invite_notices.should_notify(("invite", ctx.user_id))
        return Verdict(False, t(f"access_invite_{result.value}", ctx.language) if notify else None)


# --- admin operations ---------------------------------------------------------


class AccessControl:
    """What /allow, /disallow, /ban, /unban, /budget and /invite do."""

    def __init__(
        self,
        *,
        mode: AccessMode,
        users: UserRepository,
        invites: InviteRepository,
        auth: AuthProvider,
        refusal_notices: NoticeLimiter,
        invite_ttl: timedelta | None,
        now: Now,
    ) -> None:
        self.mode = mode
        self._users = users
        self._invites = invites
        self._auth = auth
        self._notices = refusal_notices
        self._invite_ttl = invite_ttl
        self._now = now

    def is_admin(self, user_id: int) -> bool:
        return self._auth.is_admin(user_id)

    async def find(self, ref: UserRef) -> UserRecord | None:
        if ref.user_id is not None:
            return await self._users.get(ref.user_id)
        assert ref.username is not None
        return await self._users.find_by_username(ref.username)

    async def allow(self, ref: UserRef) -> Change:
        """Admits a user. An id the bot has never seen is admitted ahead of
        their first message (the row is created); an unseen @username cannot
        be resolved to anyone."""
        return await self._set_allowed(ref, True)

    async def disallow(self, ref: UserRef) -> Change:
        return await self._set_allowed(ref, False)

    async def ban(self, ref: UserRef) -> Change:
        """Bans at once: the next message of the user is refused. An unseen
        id is banned ahead of their first message."""
        user = await self.find(ref)
        target = user.id if user else ref.user_id
        if target is None:
            return Change(Status.UNKNOWN, ref)
        if self._auth.is_admin(target):
            return Change(Status.ADMIN, ref, user)
        if user is not None and user.role == Role.BANNED:
            return Change(Status.ALREADY, ref, user)
        updated = await self._users.set_role(target, Role.BANNED.value, create=True)
        self._notices.forget(("banned", target))  # the first refused message says why
        log.info("user %s banned", target)
        return Change(Status.DONE, ref, updated)

    async def unban(self, ref: UserRef) -> Change:
        user = await self.find(ref)
        if user is None:
            return Change(Status.UNKNOWN, ref)
        if user.role != Role.BANNED:
            return Change(Status.ALREADY, ref, user)
        updated = await self._users.set_role(user.id, Role.USER.value)
        self._notices.forget(("banned", user.id))
        log.info("user %s unbanned", user.id)
        return Change(Status.DONE, ref, updated)

    async def set_budget(self, ref: UserRef, budget: int | None) -> Change:
        """``budget``: tokens per UTC day, 0 for unlimited, None for the default."""
        user = await self.find(ref)
        if user is None:
            return Change(Status.UNKNOWN, ref)
        updated = await self._users.set_token_budget(user.id, budget)
        return Change(Status.DONE, ref, updated)

    async def create_invite(self, admin_id: int, ttl: timedelta | None = None) -> InviteRecord:
        """A one-time code; ``ttl`` overrides the configured validity (None: the setting)."""
        now = self._now()
        validity = ttl if ttl is not None else self._invite_ttl
        expires_at = now + validity if validity else None
        return await self._invites.create(new_invite_code(), admin_id, now=now, expires_at=expires_at)

    async def _set_allowed(self, ref: UserRef, allowed: bool) -> Change:
        user = await self.find(ref)
        target = user.id if user else ref.user_id
        if target is None or (user is None and not allowed):
            return Change(Status.UNKNOWN, ref)
        if self._auth.is_admin(target):
            return Change(Status.ADMIN, ref, user)
        if user is not None and user.allowed == allowed:
            return Change(Status.ALREADY, ref, user)
        updated = await self._users.set_allowed(target, allowed, create=allowed)
        if allowed:
            self._notices.forget(("stranger", target))
        log.info("user %s %s", target, "allowed" if allowed else "disallowed")
        return Change(Status.DONE, ref, updated)
