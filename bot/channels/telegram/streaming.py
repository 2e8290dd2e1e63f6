"""A turn's reply in Telegram: a live preview while the model writes
(drafts in private chats, throttled edits in groups), then the final
formatted message(s). Delivery failures are logged, never raised: the answer
is already stored in history."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from telegram import Bot, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError

from bot.channels.telegram.render import Chunk, plain_chunks, render_chunks
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)

# "typing…" goes out only when the answer is not there this soon: an
# indicator for an answer that arrives sooner would flash and vanish, and
# costs a request per turn (P1: ~8% of the event loop's time).
TYPING_DELAY = 0.3


def is_parse_error(exc: BadRequest) -> bool:
    return "can't parse entities" in exc.message.lower() or "can't find end" in exc.message.lower()


def is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


@dataclass
class _Slot:
    message_id: int
    html: str
    inherited: bool = False  # a preview an earlier run left (the crash came mid-answer)


class TelegramReplySink:
    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        private: bool,
        tasks: TaskTracker,
        preview_interval: float,
        reply_to_message_id: int | None = None,
        shown: Sequence[int] = (),
        on_preview: Callable[[tuple[int, ...]], None] | None = None,
    ) -> None:
        """``shown``: messages an earlier run's preview of this answer left
        (a crash came mid-answer); the answer replaces them. ``on_preview``
        hears the message ids a group's preview occupies, as they change, so
        that such a run can be finished that way."""
        self._bot = bot
        self._chat_id = chat_id
        self._private = private
        self._tasks = tasks
        self._interval = preview_interval
        self._reply_to = reply_to_message_id
        self._draft_id = random.randint(1, 2**31 - 1)
        self._slots: list[_Slot] = [_Slot(message_id, "", inherited=True) for message_id in shown]
        self._on_preview = on_preview
        self._noted: tuple[int, ...] = tuple(shown)
        self._latest = ""
        self._finishing = asyncio.Event()
        self._previewer: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self.delivered = False

    def start_typing(self, delay: float | None = None) -> None:
        """Show "typing…" if the answer is not complete within ``delay``
        (default TYPING_DELAY), without holding up the turn; the final message
        waits for a request in flight, so the status never outlives the answer."""
        wait = TYPING_DELAY if delay is None else delay
        self._typing = self._tasks.spawn(self._send_typing(wait), f"typing:{self._chat_id}")

    async def _send_typing(self, delay: float) -> None:
        if delay > 0 and await self._wait_finishing(delay):
            return  # answered first: no indicator needed
        try:
            await self._bot.send_chat_action(self._chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.info("typing action failed: %s", exc)

    async def update(self, text: str) -> None:
        self._latest = text
        if self._previewer is None and not self._finishing.is_set():
            self._previewer = self._tasks.spawn(self._preview_loop(), f"preview:{self._chat_id}")

    async def progress(self, hint: str) -> None:
        # The hint takes the preview's place (a draft in private chats, the
        # preview message in groups) until the next round's text replaces it;
        # typing is renewed because Telegram shows it for five seconds only.
        self.start_typing(0.0)
        await self.update(hint)

    async def finish(self, text: str) -> None:
        await self._stop_preview()
        try:
            await self._show(text, final=True)
        except TelegramError as exc:
            log.error("could not deliver the answer to chat %s: %s", self._chat_id, exc)

    async def notice(self, text: str) -> None:
        await self._stop_preview()
        try:
            if self._slots and not self._private:
                await self._edit_or_skip(self._slots[0], Chunk(text, text), plain=True)
                self._slots = self._slots[:1]
                self.delivered = True
            else:
                await self._send(Chunk(text, text), plain=True)
        except TelegramError as exc:
            log.error("could not deliver a notice to chat %s: %s", self._chat_id, exc)

    async def _stop_preview(self) -> None:
        self._finishing.set()
        if self._typing is not None:
            await asyncio.gather(self._typing, return_exceptions=True)
        if self._previewer is not None:
            # Let a request in flight complete: cancelling it could leave a sent
            # message we do not know about, and the final pass would duplicate it.
            await asyncio.gather(self._previewer, return_exceptions=True)

    async def _preview_loop(self) -> None:
        # The first preview waits one interval: an answer that is complete by
        # then goes straight to its final message, without a draft round trip.
        if await self._wait_finishing(self._interval):
            return
        shown = ""
        while not self._finishing.is_set():
            text = self._latest
            if text != shown:
                try:
                    await self._show(text, final=False)
                except TelegramError as exc:
                    log.info("preview failed in chat %s: %s", self._chat_id, exc)
                shown = text
            await self._wait_finishing(self._interval)

    async def _wait_finishing(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when the answer is complete."""
        try:
            await asyncio.wait_for(self._finishing.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _show(self, text: str, *, final: bool) -> None:
        chunks = render_chunks(text)
        if not chunks:
            return
        settled = chunks if final else chunks[:-1]
        for index, chunk in enumerate(settled):
            await self._put(index, chunk)
        if final:
            await self._drop_extra_slots(len(chunks))
            return
        live = chunks[-1]
        if self._private:
            await self._draft(live)
        else:
            await self._put(len(chunks) - 1, live)
            self._note_preview()

    def _note_preview(self) -> None:
        ids = tuple(slot.message_id for slot in self._slots)
        if self._on_preview is not None and ids != self._noted:
            self._noted = ids
            self._on_preview(ids)

    async def _put(self, index: int, chunk: Chunk) -> None:
        if index >= len(self._slots):
            await self._send(chunk)
            return
        slot = self._slots[index]
        try:
            await self._edit_or_skip(slot, chunk)
        except BadRequest as exc:
            if not slot.inherited:
                raise
            # The earlier run's preview is gone (deleted, too old to edit): a new message instead.
            log.info("could not replace the preview %s left by a crash: %s", slot.message_id, exc.message)
            del self._slots[index:]
            await self._send(chunk)

    async def _send(self, chunk: Chunk, *, plain: bool = False) -> None:
        reply = (
            ReplyParameters(self._reply_to, allow_sending_without_reply=True)
            if self._reply_to and not self._slots
            else None
        )
        if plain:
            for piece in plain_chunks(chunk.plain):
                message = await self._bot.send_message(self._chat_id, piece, reply_parameters=reply)
                self._slots.append(_Slot(message.message_id, piece))
                reply = None
            self.delivered = True
            return
        try:
            message = await self._bot.send_message(
                self._chat_id, chunk.html, parse_mode=ParseMode.HTML, reply_parameters=reply
            )
        except BadRequest as exc:
            if not is_parse_error(exc):
                raise
            log.warning("Telegram rejected our HTML (%s); resending as plain text", exc.message)
            message = await self._bot.send_message(self._chat_id, chunk.plain, reply_parameters=reply)
        self._slots.append(_Slot(message.message_id, chunk.html))
        self.delivered = True

    async def _edit_or_skip(self, slot: _Slot, chunk: Chunk, *, plain: bool = False) -> None:
        if slot.html == chunk.html:
            return
        try:
            if plain:
                await self._bot.edit_message_text(chunk.plain, self._chat_id, slot.message_id)
            else:
                await self._edit_html(slot, chunk)
        except BadRequest as exc:
            if not is_not_modified(exc):
                raise
        slot.html = chunk.html
        self.delivered = True

    async def _edit_html(self, slot: _Slot, chunk: Chunk) -> None:
        try:
            await self._bot.edit_message_text(
                chunk.html, self._chat_id, slot.message_id, parse_mode=ParseMode.HTML
            )
        except BadRequest as exc:
            if not is_parse_error(exc):
                raise
            await self._bot.edit_message_text(chunk.plain, self._chat_id, slot.message_id)

    async def _draft(self, chunk: Chunk) -> None:
        try:
            await self._bot.send_message_draft(
                self._chat_id, self._draft_id, chunk.html, parse_mode=ParseMode.HTML
            )
        except BadRequest as exc:
            if not is_parse_error(exc):
                raise
            await self._bot.send_message_draft(self._chat_id, self._draft_id, chunk.plain)

    async def _drop_extra_slots(self, keep: int) -> None:
        # Rare: the final text rendered into fewer chunks than a preview did.
        for slot in self._slots[keep:]:
            try:
                await self._bot.delete_message(self._chat_id, slot.message_id)
            except TelegramError as exc:
                log.info("could not delete stale preview %s: %s", slot.message_id, exc)
        del self._slots[keep:]


