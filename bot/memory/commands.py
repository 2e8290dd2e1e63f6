"""/memory, /forget, /export and /deleteme as the core does them, for every
channel: which memories a page shows, what a /forget would delete, what a
confirmed action did, all worded in the user's language. A channel only
adds its way of confirming (Telegram's buttons, the console's "yes") and of
handing over the export (a document, a file)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import bot.memory.strings  # noqa: F401  (registers the strings used here)
from bot.context import RequestContext
from bot.i18n import t
from bot.memory.records import MemoryRecord
from bot.memory.service import MemoryService
from bot.memory.tools import clear_matches
from bot.personal_data import UserData

SHOWN_CHARS = 300  # per memory in a list, so a page stays far below Telegram's 4096
FORGET_SEARCH = 10
EVERYTHING = ("all", "всё", "все")


def shorten(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


@dataclass(frozen=True)
class MemoryPage:
    items: list[MemoryRecord]
    page: int  # from 0
    pages: int
    total: int

    def lines(self, language: str) -> list[str]:
        header = t("mem_page_header", language, total=self.total, page=self.page + 1, pages=self.pages)
        return [header, ""] + [f"{n}. {shorten(m.text)}" for n, m in enumerate(self.items, 1)]


def page_argument(argument: str) -> int:
    """``/memory 3`` opens page 3 (from 0 here); anything else the first."""
    try:
        return max(0, int((argument.split() or ["1"])[0]) - 1)
    except ValueError:
        return 0


async def memory_page(memory: MemoryService, user_id: int, page: int, size: int) -> MemoryPage | None:
    """The page (clamped to the last one), or None when nothing is remembered."""
    total = await memory.count(user_id)
    if total == 0:
        return None
    pages = math.ceil(total / size)
    page = min(max(page, 0), pages - 1)
    items, total = await memory.page(user_id, page, size)
    if not items:  # the list shrank meanwhile
        return None
    return MemoryPage(items, page, max(pages, 1), total)


@dataclass(frozen=True)
class ForgetRequest:
    """What /forget <words> would delete, for the user to confirm; or, when
    there is nothing to confirm, the answer (``ids`` empty)."""

    ids: list[int]
    texts: list[str]
    answer: str | None = None
    everything: int = 0  # /forget all: how many memories that is
    more: bool = False  # more memories match than one /forget takes

    @property
    def to_confirm(self) -> bool:
        return bool(self.ids or self.everything)

    def prompt(self, language: str, shown: int | None = None) -> str:
        """The confirmation question; ``shown``: how many the channel can
        offer at once (Telegram's button data is short), if fewer than all."""
        if self.everything:
            return t("mem_forget_all_confirm", language, count=self.everything)
        count = len(self.ids) if shown is None else shown
        lines = [t("mem_forget_confirm", language, count=count), ""]
        lines += [f"• {shorten(text)}" for text in self.texts[:count]]
        if count < len(self.ids) or self.more:
            lines += ["", t("mem_forget_more", language, shown=count)]
        return "\n".join(lines)


async def forget_request(memory: MemoryService, ctx: RequestContext, query: str) -> ForgetRequest:
    query = query.strip()
    if not query:
        return ForgetRequest([], [], t("mem_forget_usage", ctx.language))
    if query.lower() in EVERYTHING:
        count = await memory.count(ctx.user_id)
        if count == 0:
            return ForgetRequest([], [], t("mem_empty", ctx.language))
        return ForgetRequest([], [], everything=count)
    # One more than is taken: whether the user must be told that more match.
    hits = clear_matches(await memory.search(ctx.user_id, query, FORGET_SEARCH + 1, wait=2.0))
    if not hits:
        return ForgetRequest([], [], t("mem_forget_none", ctx.language, query=shorten(query)))
    taken = hits[:FORGET_SEARCH]
    return ForgetRequest(
        [hit.memory.id for hit in taken], [hit.memory.text for hit in taken], more=len(hits) > FORGET_SEARCH
    )


async def forget(memory: MemoryService, ctx: RequestContext, ids: list[int]) -> str:
    deleted = await memory.delete(ctx.user_id, ids)
    return t("mem_forget_done", ctx.language, count=len(deleted))


async def forget_everything(memory: MemoryService, ctx: RequestContext) -> str:
    count = await memory.delete_all(ctx.user_id)
    return t("mem_forget_all_done", ctx.language, count=count)


async def erase_everything(userdata: UserData, ctx: RequestContext) -> str:
    erased = await userdata.erase(ctx.user_id)
    memories, messages = erased.get("memories", 0), erased.get("history", 0)
    details = t("mem_erase_details", ctx.language, memories=memories, messages=messages)
    return t("mem_deleteme_done", ctx.language, details=details)


def export_filename(now: datetime) -> str:
    return f"arium-export-{now:%Y-%m-%d}.json"
