"""/link: one person, several channels. A code shown in one channel and
entered in another joins the two users behind them, so memories, reminders
and API keys follow the person wherever they write.

Which user remains: the one with a Telegram identity (so a Telegram id
stays the id of its user, and BOT_ADMIN_IDS, /ban and broadcasts keep
meaning the same person); when neither has one, the one who showed the
code. Two users who both have an identity in the same channel are not
joined: that would make one person of two Telegram accounts, say.

Codes: 10 characters from an alphabet without look-alikes (~50 bits), one
live code per user, valid for CODE_LIFETIME, consumed when entered (even
when the link is then refused). Only their SHA-256 is stored."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import bot.link_strings  # noqa: F401  (registers this module's strings)
from bot.context import RequestContext
from bot.errors import AriumError
from bot.i18n import t
from bot.identity import TELEGRAM, channel_of
from bot.memory.service import MemoryService
from bot.reminders.clock import Clock
from bot.storage.identities import IdentityRepository
from bot.storage.repositories import UserRepository
from bot.tools.sandbox import FileSandbox

log = logging.getLogger(__name__)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10
CODE_LIFETIME = timedelta(minutes=10)


class LinkRefused(AriumError):
    """A code that cannot join anything; ``code`` names the i18n key's tail."""

    def __init__(self, code: str, **values: object) -> None:
        super().__init__(code)
        self.code = code
        self.values = values

    def text(self, language: str) -> str:
        values = dict(self.values)
        if "channel" in values:
            values["channel"] = t(f"link_channel_{values['channel']}", language)
        return t(f"link_err_{self.code}", language, **values)


@dataclass(frozen=True)
class IssuedLinkCode:
    code: str
    expires_at: datetime

    @property
    def shown(self) -> str:
        """Grouped for reading aloud or typing: ABCDE-FGHJK."""
        half = CODE_LENGTH // 2
        return f"{self.code[:half]}-{self.code[half:]}"


@dataclass(frozen=True)
class Linked:
    memories: int  # moved from the other user
    reminders: int
    files: int = 0


def normalized_code(text: str) -> str | None:
    """The code as stored, from what a person typed (any case, dashes and
    spaces ignored); None when it cannot be a code."""
    code = "".join(ch for ch in text.upper() if ch not in "- \t")
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        return None
    return code


class Linker:
    def __init__(
        self,
        identities: IdentityRepository,
        users: UserRepository,
        memory: MemoryService,
        files: FileSandbox,
        clock: Clock,
    ) -> None:
        self._identities = identities
        self._users = users
        self._memory = memory
        self._files = files
        self._clock = clock

    async def issue(self, ctx: RequestContext) -> IssuedLinkCode:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        expires_at = self._clock.now() + CODE_LIFETIME
        await self._identities.add_code(code, ctx.user_id, channel_of(ctx.chat_type), expires_at)
        return IssuedLinkCode(code, expires_at)

    async def redeem(self, ctx: RequestContext, text: str) -> Linked:
        code = normalized_code(text)
        if code is None:
            raise LinkRefused("malformed")
        issued = await self._identities.take_code(code, self._clock.now(), taker=ctx.user_id)
        if issued is None:
            raise LinkRefused("unknown")
        if issued.user_id == ctx.user_id:
            raise LinkRefused("same_user")
        theirs = await self._identities.channels_of(issued.user_id)
        mine = await self._identities.channels_of(ctx.user_id)
        shared = sorted(set(theirs) & set(mine))
        if shared:
            raise LinkRefused("both_in", channel=shared[0])
        issuer = await self._users.get(issued.user_id)
        if issuer is None or issuer.role == "banned":
            raise LinkRefused("unknown")
        survivor, absorbed = issued.user_id, ctx.user_id
        if TELEGRAM in mine:
            survivor, absorbed = absorbed, survivor
        merged = await self._identities.merge(absorbed, survivor)
        # Both users' vector indexes are rebuilt from the rows at next use.
        for user_id in (absorbed, survivor):
            await self._memory.drop_index(user_id)
        files = await asyncio.to_thread(self._files.adopt, absorbed, survivor)
        log.info("linked user %s into user %s (%d memories, %d reminders, %d files moved)",
                 absorbed, survivor, merged.memories, merged.reminders, files)
        return Linked(merged.memories, merged.reminders, files)


def issued_text(issued: IssuedLinkCode, ctx: RequestContext) -> str:
    minutes = int(CODE_LIFETIME.total_seconds() // 60)
    return t("link_code", ctx.language, code=issued.shown, minutes=minutes)


def linked_text(linked: Linked, ctx: RequestContext) -> str:
    return t("link_done", ctx.language, memories=linked.memories, reminders=linked.reminders)


async def link_command(linker: Linker, ctx: RequestContext, argument: str) -> str:
    """/link alone shows a code; /link CODE enters one. Returns what to say."""
    if not argument.strip():
        return issued_text(await linker.issue(ctx), ctx)
    try:
        return linked_text(await linker.redeem(ctx, argument), ctx)
    except LinkRefused as refused:
        return refused.text(ctx.language)
