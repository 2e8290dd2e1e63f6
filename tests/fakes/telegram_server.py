"""A protocol-faithful fake of the Telegram Bot API, served over real HTTP.

The bot under test talks to it with the real python-telegram-bot stack, so the
fake has to get the wire details right: how PTB encodes parameters, the exact
response envelope, HTTP statuses, error wording and Telegram's HTML dialect.
Tests script it (inject updates, queue faults) and observe it (calls, messages).

    async with FakeTelegram() as tg:
        app = ApplicationBuilder().token(tg.token).base_url(tg.base_url) ...
        tg.user_text("/start")
        await tg.wait_messages(1001, 1)
"""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import json
import math
import re
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.telegram_webhook import Webhook, WebhookDelivery, WebhookPusher
from tests.limits import WAIT_LIMIT

JsonDict = dict[str, Any]

# --------------------------------------------------------------------------
# Wire constants
# --------------------------------------------------------------------------

# Canonical spelling of every method the fake answers; lookups are
# case-insensitive because the real API is.
_IMPLEMENTED = (
    "getMe",
    "getUpdates",
    "deleteWebhook",
    "setWebhook",
    "getWebhookInfo",
    "setMyCommands",
    "deleteMyCommands",
    "getMyCommands",
    "close",
    "logOut",
    "sendMessage",
    "editMessageText",
    "sendMessageDraft",
    "sendChatAction",
    "deleteMessage",
    "answerCallbackQuery",
    "sendDocument",
    "sendPhoto",
    "getFile",
)

_CANONICAL = {name.lower(): name for name in _IMPLEMENTED}

# Telegram counts flood limits on outgoing content, not on housekeeping calls.
_RATE_LIMITED = frozenset({"sendMessage", "editMessageText", "sendMessageDraft", "sendDocument", "sendPhoto"})

# Parameters that are strings in the Bot API. PTB sends strings unencoded and
# everything else JSON-encoded, so only these must never go through json.loads
# (a text "123" or "true" has to stay a string).
_STRING_FIELDS = frozenset(
    {
        "text", "caption", "parse_mode", "username", "title", "description",
        "short_description", "name", "first_name", "last_name", "action",
        "emoji", "callback_query_id", "inline_query_id", "inline_message_id",
        "url", "data", "message_effect_id", "business_connection_id",
        "language_code", "secret_token", "ip_address", "question",
        "explanation", "explanation_parse_mode", "question_parse_mode",
        "sticker_set_name", "custom_emoji_id", "file_id", "phone_number",
        "vcard", "address", "next_offset", "payload", "currency",
        "start_parameter", "invite_link", "query", "result_id",
        "game_short_name", "error_message", "document", "photo", "audio",
        "video", "voice", "animation", "sticker", "video_note", "thumbnail",
    }
)

_CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video",
        "record_voice", "upload_voice", "upload_document", "choose_sticker",
        "find_location", "record_video_note", "upload_video_note",
    }
)

# Methods that put something into a chat: a user who blocked the bot refuses them.
_DELIVERING = frozenset({"sendMessage", "editMessageText", "sendMessageDraft", "sendChatAction", "sendDocument"})
_BLOCKED = "Forbidden: bot was blocked by the user"

# Updates Telegram only sends when asked for explicitly in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_MAX_TEXT = 4096
_MAX_CAPTION = 1024
# The cloud Bot API lets bots download files of at most 20 MB.
_MAX_DOWNLOAD = 20 * 1024 * 1024
# sendPhoto (https://core.telegram.org/bots/api#sendphoto): at most 10 MB,
# width + height at most 10000, width/height ratio at most 20.
_MAX_PHOTO_BYTES = 10 * 1024 * 1024
_MAX_PHOTO_SIDES = 10_000
_MAX_PHOTO_RATIO = 20
# Telegram stores a photo in sizes that fit these boxes (types s, m, x, y, w),
# smallest first, up to the one that holds the original.
_PHOTO_BOXES = (90, 320, 800, 1280, 2560)

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply "
    "markup are exactly the same as a current content and reply markup of the message"
)
_WEBHOOK_ACTIVE = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: injected fault",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


# --------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------


@dataclass
class Call:
    """One request as the fake received it (params already decoded)."""

    method: str
    params: JsonDict
    at: float
    status: int = 0  # HTTP status of the answer; 0 while still pending (long polls)
    error: str | None = None


@dataclass
class UploadedFile:
    """A multipart file part."""

    field_name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class SentMessage:
    """A message the bot sent, as it currently looks in the chat."""

    chat_id: int
    message_id: int
    text: str  # visible text (for documents: the caption), after edits
    html: str | None  # raw markup as sent/last edited when parse_mode was HTML
    parse_mode: str | None
    entities: list[JsonDict]
    reply_markup: JsonDict | None
    reply_to_message_id: int | None
    date: int
    message_thread_id: int | None = None
    document: JsonDict | None = None
    photo: list[JsonDict] | None = None  # PhotoSize objects, smallest first
    file: UploadedFile | None = None  # the uploaded bytes of a document or photo
    edits: list[str] = field(default_factory=list)  # visible text after each edit
    edit_date: int | None = None
    deleted: bool = False


@dataclass
class _Fault:
    method: str  # canonical
    status: int
    description: str
    retry_after: int | None
    remaining: int
    when: Callable[[JsonDict], bool] | None


@dataclass(frozen=True)
class TelegramLimits:
    """Telegram's flood limits, enforced by the fake only after
    ``enforce_limits`` (off by default, so other tests are unaffected)."""

    overall: int = 30
    overall_period: float = 1.0
    private: int = 1  # per private chat
    private_period: float = 1.0
    group: int = 20  # per group, supergroup or channel
    group_period: float = 60.0
    # A request's moment differs a little between the sender and this server
    # (network, two event loops); Telegram's own counting is not that exact.
    slack: float = 0.05


# Sends the flood limits count. Drafts stay out, as in the bot's limiter
# (bot/channels/telegram/shared_limits.py): they are a live preview.
_FLOOD_COUNTED = frozenset({"sendMessage", "editMessageText", "sendDocument", "sendPhoto"})


class ApiError(Exception):
    """An error answer, shaped exactly like the Bot API's."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


# --------------------------------------------------------------------------
# Telegram's HTML dialect (behaviour follows TDLib's parser, incl. wording)
# --------------------------------------------------------------------------

_SPACES = " \t\r\n\v\f"
_SUPPORTED_TAGS = frozenset(
    {
        "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins",
        "tg-spoiler", "tg-emoji", "span", "pre", "code", "blockquote", "tg-time",
    }
)
_SIMPLE_ENTITIES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic",
    "u": "underline", "ins": "underline", "s": "strikethrough",
    "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler",
}
# Telegram's order for entities sharing a span (outermost first).
_ENTITY_PRIORITY = {
    "blockquote": 0, "expandable_blockquote": 0, "pre": 11, "code": 20,
    "text_link": 49, "bold": 90, "italic": 91, "underline": 92,
    "strikethrough": 93, "spoiler": 94, "custom_emoji": 99,
}
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class EntityParseError(Exception):
    """Markup Telegram would reject; str() is the part after 'can't parse entities: '."""


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _ascii_lower(value: str) -> str:
    # Telegram lowercases ASCII only; str.lower() would also fold other scripts.
    return "".join(ch.lower() if ch.isascii() else ch for ch in value)


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _decode_reference(s: str, i: int) -> tuple[str, int] | None:
    """Decode an '&...' reference at s[i]; None means 'keep the & literally'."""
    j = i + 1
    if s[j : j + 1] == "#":
        j += 1
        digits = "0123456789"
        base = 10
        if s[j : j + 1] == "x":
            j += 1
            digits, base = "0123456789abcdefABCDEF", 16
        start = j
        while j < len(s) and s[j] in digits:
            j += 1
        code = int(s[start:j], base) if j > start else 0
        if code == 0 or code >= 0x10FFFF or j - i >= 10:
            return None
        char = chr(code)
    else:
        start = j
        while j < len(s) and s[j].isascii() and s[j].isalpha():
            j += 1
        if s[start:j] not in _NAMED_REFERENCES:
            return None  # e.g. &nbsp; is shown as typed, not an error
        char = _NAMED_REFERENCES[s[start:j]]
    if s[j : j + 1] == ";":
        j += 1
    return char, j


@dataclass
class _OpenTag:
    name: str
    attributes: dict[str, str]
    utf16_start: int
    text_start: int  # index into the output chunks


class _HtmlParser:
    """Turns Telegram HTML into (visible text, entities) or raises EntityParseError."""

    def __init__(self, markup: str) -> None:
        self.s = markup
        self.i = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[JsonDict] = []

    def parse(self) -> tuple[str, list[JsonDict]]:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "&" and self._reference():
                continue
            if ch != "<":
                self._emit(ch)
                self.i += 1
            elif self._peek(1) == "/":
                self._end_tag()
            else:
                self._start_tag()
        if self.stack:
            raise EntityParseError(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        text = "".join(self.out)
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            raise EntityParseError(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        for entity in self.entities:
            if entity["type"] == "code":
                entity.pop("language", None)  # only pre entities carry a language
        self.entities.sort(
            key=lambda e: (e["offset"], -e["length"], _ENTITY_PRIORITY.get(e["type"], 50))
        )
        return text, self.entities

    # -- low-level cursor helpers
    def _peek(self, ahead: int = 0) -> str:
        pos = self.i + ahead
        return self.s[pos] if pos < len(self.s) else ""

    def _at_end(self) -> bool:
        return self.i >= len(self.s)

    def _byte_offset(self, pos: int) -> int:
        # Telegram reports positions in UTF-8 bytes of the original markup.
        return len(self.s[:pos].encode("utf-8", "surrogatepass"))

    def _read_while(self, keep: Callable[[str], bool]) -> str:
        start = self.i
        while self.i < len(self.s) and keep(self.s[self.i]):
            self.i += 1
        return self.s[start : self.i]

    def _skip_spaces(self) -> None:
        self._read_while(lambda ch: ch in _SPACES)

    def _emit(self, ch: str) -> None:
        self.out.append(ch)
        self.utf16 += 2 if ord(ch) > 0xFFFF else 1

    def _reference(self) -> bool:
        decoded = _decode_reference(self.s, self.i)
        if decoded is None:
            return False
        char, self.i = decoded
        self._emit(char)
        return True

    # -- tags
    def _start_tag(self) -> None:
        begin = self.i
        self.i += 1
        raw_name = self._read_while(lambda ch: ch not in _SPACES and ch != ">")
        if self._at_end():
            raise EntityParseError(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
        name = _ascii_lower(raw_name)
        if name not in _SUPPORTED_TAGS:
            raise EntityParseError(
                f'Unsupported start tag "{name}" at byte offset {self._byte_offset(begin)}'
            )
        attributes = self._attributes(name, begin)
        self.i += 1  # past '>'
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise EntityParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self._byte_offset(begin)}'
            )
        self.stack.append(_OpenTag(name, attributes, self.utf16, len(self.out)))

    def _attributes(self, tag: str, begin: int) -> dict[str, str]:
        attributes: dict[str, str] = {}
        unclosed = f'Unclosed start tag "{tag}" at byte offset {self._byte_offset(begin)}'
        while True:
            self._skip_spaces()
            if self._at_end():
                raise EntityParseError(unclosed)
            if self._peek() == ">":
                return attributes
            name = self._read_while(lambda ch: ch not in _SPACES and ch not in "=>")
            if not name:
                raise EntityParseError(
                    f'Empty attribute name in the tag "{tag}" at byte offset {self._byte_offset(begin)}'
                )
            self._skip_spaces()
            if self._at_end():
                raise EntityParseError(unclosed)
            if self._peek() != "=":
                attributes[_ascii_lower(name)] = ""  # valueless, e.g. <blockquote expandable>
                continue
            self.i += 1
            self._skip_spaces()
            if self._at_end():
                raise EntityParseError(unclosed)
            value = self._attribute_value()
            if self._at_end():
                raise EntityParseError(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
            attributes[_ascii_lower(name)] = value

    def _attribute_value(self) -> str:
        quote = self._peek()
        if quote not in ("'", '"'):
            start = self.i
            token = self._read_while(lambda ch: _is_ascii_alnum(ch) or ch in ".-")
            if not self._at_end() and self._peek() not in _SPACES and self._peek() != ">":
                raise EntityParseError(
                    f"Unexpected end of name token at byte offset {self._byte_offset(start)}"
                )
            return _ascii_lower(token)
        self.i += 1
        chars: list[str] = []
        while not self._at_end() and self._peek() != quote:
            decoded = _decode_reference(self.s, self.i) if self._peek() == "&" else None
            if decoded is not None:
                chars.append(decoded[0])
                self.i = decoded[1]
            else:
                chars.append(self._peek())
                self.i += 1
        if not self._at_end():
            self.i += 1  # closing quote
        return "".join(chars)

    def _end_tag(self) -> None:
        begin = self.i
        if not self.stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {self._byte_offset(begin)}")
        self.i += 2
        name = _ascii_lower(self._read_while(lambda ch: ch not in _SPACES and ch != ">"))
        self._skip_spaces()
        if self._peek() != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {self._byte_offset(begin)}")
        self.i += 1
        top = self.stack.pop()
        if name and name != top.name:  # '</>' closes whatever is open
            raise EntityParseError(
                f"Unmatched end tag at byte offset {self._byte_offset(begin)}, "
                f'expected "</{top.name}>", found "</{name}>"'
            )
        length = self.utf16 - top.utf16_start
        if length > 0:
            self._add_entity(top, length)

    # -- entities
    def _add_entity(self, tag: _OpenTag, length: int) -> None:
        entity: JsonDict = {"offset": tag.utf16_start, "length": length}
        if tag.name in _SIMPLE_ENTITIES:
            entity["type"] = _SIMPLE_ENTITIES[tag.name]
        elif tag.name == "blockquote":
            entity["type"] = "expandable_blockquote" if "expandable" in tag.attributes else "blockquote"
        elif tag.name == "tg-emoji":
            entity.update(type="custom_emoji", custom_emoji_id=self._emoji_id(tag))
        elif tag.name == "a":
            url = _normalize_url(tag.attributes.get("href") or "".join(self.out[tag.text_start :]))
            if url is None:
                return  # Telegram silently drops links it can't use
            entity.update(type="text_link", url=url)
        elif tag.name == "tg-time":
            if not tag.attributes.get("unix", "").isdigit():
                return
            entity.update(type="date_time", unix_time=int(tag.attributes["unix"]))
            if tag.attributes.get("format"):
                entity["date_time_format"] = tag.attributes["format"]
        elif tag.name == "code":
            if self._language_onto_pre(tag, length):
                return
            entity.update(type="code", language=_language(tag))  # language dropped in parse()
        elif self._code_into_pre(tag, length):
            return
        else:
            entity["type"] = "pre"
        self.entities.append(entity)

    @staticmethod
    def _emoji_id(tag: _OpenTag) -> str:
        raw = tag.attributes.get("emoji-id", "")
        if not raw.isdigit() or not 0 < int(raw) < 2**63:
            raise EntityParseError("Invalid custom emoji identifier specified")
        return raw

    def _same_span_last(self, kind: str, tag: _OpenTag, length: int) -> JsonDict | None:
        last = self.entities[-1] if self.entities else None
        if last and last["type"] == kind and (last["offset"], last["length"]) == (tag.utf16_start, length):
            return last
        return None

    def _language_onto_pre(self, code: _OpenTag, length: int) -> bool:
        """<code class="language-x"><pre>..</pre></code>: the pre gets the language."""
        pre = self._same_span_last("pre", code, length)
        if pre is None or not _language(code):
            return False
        pre["language"] = _language(code)
        return True

    def _code_into_pre(self, pre: _OpenTag, length: int) -> bool:
        """<pre><code class="language-x">..</code></pre> is a single pre entity."""
        code = self._same_span_last("code", pre, length)
        if code is None or not code.get("language"):
            return False
        code["type"] = "pre"
        return True


def _language(tag: _OpenTag) -> str:
    value = tag.attributes.get("class", "")
    return value[len("language-") :] if value.startswith("language-") else ""


def _normalize_url(url: str) -> str | None:
    url = url.strip()
    if not url:
        return None
    if "://" not in url and not url.startswith(("tg:", "mailto:")):
        return f"http://{url}"
    return url


def parse_html(markup: str) -> tuple[str, list[JsonDict]]:
    """Visible text and entities of Telegram-HTML markup; raises EntityParseError."""
    return _HtmlParser(markup).parse()


def _trim(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Telegram strips leading/trailing whitespace and shifts entities to match."""
    stripped = text.strip(_SPACES)
    if stripped == text:
        return text, entities
    lead = len(text) - len(text.lstrip(_SPACES))  # ASCII spaces: one UTF-16 unit each
    end = utf16_len(stripped)
    kept: list[JsonDict] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        stop = min(entity["offset"] + entity["length"] - lead, end)
        if stop > start:
            kept.append({**entity, "offset": start, "length": stop - start})
    return stripped, kept


# --------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------


def _decode_value(name: str, value: Any) -> Any:
    if isinstance(value, UploadedFile):
        return value
    if name in _STRING_FIELDS:
        # A JSON body may carry numbers for string fields; Telegram stringifies them.
        return value if isinstance(value, str) else json.dumps(value)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # e.g. chat_id "@channel"


async def _read_params(request: web.Request) -> JsonDict:
    """Parameters from query string and body, in any encoding the real API accepts."""
    raw: JsonDict = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise _bad_request("can't parse JSON object") from exc
            if not isinstance(body, dict):
                raise _bad_request("can't parse JSON object")
            raw.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    raw[key] = UploadedFile(key, value.filename, value.content_type, value.file.read())
                else:
                    raw[key] = value
    return {key: _decode_value(key, value) for key, value in raw.items()}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image Telegram can process; anything it cannot
    decode fails the way Telegram's does."""
    from PIL import Image, UnidentifiedImageError  # installed with matplotlib

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode it all: a truncated file fails here
            return image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _bad_request("IMAGE_PROCESS_FAILED") from exc


# --------------------------------------------------------------------------
# Entities Telegram adds to incoming user text
# --------------------------------------------------------------------------

_COMMAND_RE = re.compile(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])")
_MENTION_RE = re.compile(r"(?<!\w)@[A-Za-z0-9_]{2,32}(?!\w)")


def _auto_entities(text: str) -> list[JsonDict]:
    entities: list[JsonDict] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in (("bot_command", _COMMAND_RE), ("mention", _MENTION_RE)):
        for match in pattern.finditer(text):
            if any(match.start() < stop and start < match.end() for start, stop in taken):
                continue  # "/cmd@bot" is one command, not a command plus a mention
            taken.append((match.start(), match.end()))
            entities.append(
                {
                    "type": kind,
                    "offset": utf16_len(text[: match.start()]),
                    "length": utf16_len(match.group()),
                }
            )
    return sorted(entities, key=lambda e: e["offset"])


# --------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------


class FakeTelegram:
    """Fake Bot API server; see the module docstring."""

    TOKEN: ClassVar[str] = "123456:TEST-TOKEN"
    DEFAULT_CHAT: ClassVar[int] = 1001

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.bot_user: JsonDict = {
            "id": 4242,
            "is_bot": True,
            "first_name": "Arium",
            "username": "arium_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.rate_limit: tuple[int, float] | None = None
        self.too_many_requests = 0
        # Telegram's flood limits (opt-in): refusals counted, windows per key.
        self.telegram_limits: TelegramLimits | None = None
        self.limit_refusals = 0
        self._flood_windows: dict[object, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._stopping = False
        # updates and polling
        self._updates: list[JsonDict] = []
        self._update_ids = itertools.count(1)
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._updates_changed = asyncio.Event()
        self._activity = asyncio.Event()
        # webhook (setWebhook): while set, updates are POSTed to it, not polled
        self._pusher: WebhookPusher | None = None
        self.webhook_deliveries: list[WebhookDelivery] = []
        # chats and messages
        self._chats: dict[int, JsonDict] = {}
        self._users: dict[int, JsonDict] = {}
        self._last_message_id: dict[int, int] = collections.defaultdict(int)
        self._user_messages: dict[tuple[int, int], JsonDict] = {}
        self._sent: dict[int, list[SentMessage]] = collections.defaultdict(list)
        self._reply_snapshots: dict[tuple[int, int], JsonDict] = {}
        self._open_callbacks: set[str] = set()
        self._callback_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        # file_id -> (file_unique_id, bytes) of files users sent; file_path -> bytes once getFile issued it
        self._user_files: dict[str, tuple[str, bytes]] = {}
        self._file_paths: dict[str, bytes] = {}
        self.downloads: list[str] = []  # file paths the bot downloaded
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}
        # faults
        self._faults: list[_Fault] = []
        self._blocked: dict[int, str] = {}  # private chat id -> the 403 description
        self._send_times: collections.deque[float] = collections.deque()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=50 * 1024 * 1024)  # Telegram's upload cap
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._download)
        # Cancel handlers whose client went away, so an abandoned long poll
        # doesn't linger and steal the next poller's updates.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._stopping = True
        self._wake_pollers()  # pending long polls answer [] right away
        await self._stop_pushing()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._url

    @property
    def base_url(self) -> str:
        """For ApplicationBuilder().base_url(...)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For ApplicationBuilder().base_file_url(...)."""
        return f"{self.url}/file/bot"

    # ---------------------------------------------------------------- injecting

    def user_text(
        self,
        text: str,
        *,
        chat_id: int = DEFAULT_CHAT,
        user_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "Ann",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        reply_to_message_id: int | None = None,
        entities: list[JsonDict] | None = None,
        chat_title: str | None = None,
    ) -> JsonDict:
        """A text message from a user. Commands and @mentions get their entities."""
        fields: JsonDict = {"text": text}
        found = _auto_entities(text) if entities is None else entities
        if found:
            fields["entities"] = found
        return self.user_message(
            chat_id=chat_id, user_id=user_id, chat_type=chat_type, first_name=first_name,
            last_name=last_name, username=username, language_code=language_code,
            reply_to_message_id=reply_to_message_id, chat_title=chat_title, **fields,
        )

    def user_message(
        self,
        *,
        chat_id: int = DEFAULT_CHAT,
        user_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "Ann",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
        **message_fields: Any,
    ) -> JsonDict:
        """Any user message; the payload (sticker=..., photo=[...], ...) comes from the test."""
        kind = chat_type or self._chat_type(chat_id)
        uid = user_id if user_id is not None else (chat_id if kind == "private" else self.DEFAULT_CHAT)
        user = self._user(uid, first_name, last_name, username, language_code)
        chat = self._chat(chat_id, kind, user, chat_title)
        message: JsonDict = {
            "message_id": self._next_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
        }
        if reply_to_message_id is not None:
            message["reply_to_message"] = self._message_dict(chat_id, reply_to_message_id)
        message.update(message_fields)
        return self.add_update({"message": message})

    def user_document(
        self,
        file_name: str | None,
        data: bytes,
        *,
        mime_type: str | None = None,
        caption: str | None = None,
        declare_size: bool = True,
        **options: Any,
    ) -> JsonDict:
        """A user sends a file; the bot can fetch it with getFile and download it.
        ``declare_size=False`` omits file_size, which the Bot API marks optional."""
        number = next(self._file_ids)
        file_id = f"BQACAgUSER{number:06d}"
        unique_id = f"AgADUSER{number:06d}"
        self._user_files[file_id] = (unique_id, data)
        document: JsonDict = {"file_id": file_id, "file_unique_id": unique_id}
        if file_name is not None:
            document["file_name"] = file_name
        if mime_type is not None:
            document["mime_type"] = mime_type
        if declare_size:
            document["file_size"] = len(data)
        fields: JsonDict = {"document": document}
        if caption:
            fields["caption"] = caption
            if found := _auto_entities(caption):
                fields["caption_entities"] = found
        return self.user_message(**options, **fields)

    def user_photo(self, image: bytes, *, caption: str | None = None, **options: Any) -> JsonDict:
        """A user sends a photo. As Telegram does, it is kept in sizes that fit
        the _PHOTO_BOXES (smallest first, up to the one holding the original),
        each a JPEG of its own the bot can fetch with getFile and download."""
        from PIL import Image

        original = Image.open(io.BytesIO(image)).convert("RGB")
        width, height = original.size
        sizes: list[JsonDict] = []
        for box in _PHOTO_BOXES:
            scale = min(1.0, box / max(width, height))
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            out = io.BytesIO()
            original.resize((w, h)).save(out, "JPEG", quality=87)
            number = next(self._file_ids)
            file_id, unique_id = f"AgACAgUSER{number:06d}", f"AQADUSER{number:06d}"
            self._user_files[file_id] = (unique_id, out.getvalue())
            sizes.append(
                {"file_id": file_id, "file_unique_id": unique_id, "width": w, "height": h, "file_size": out.tell()}
            )
            if scale == 1.0:
                break
        fields: JsonDict = {"photo": sizes}
        if caption:
            fields["caption"] = caption
            if found := _auto_entities(caption):
                fields["caption_entities"] = found
        return self.user_message(**options, **fields)

    def user_voice(
        self,
        data: bytes,
        *,
        duration: int = 3,
        mime_type: str | None = "audio/ogg",
        caption: str | None = None,
        declare_size: bool = True,
        **options: Any,
    ) -> JsonDict:
        """A user sends a voice note (Telegram's apps record OGG/Opus);
        ``duration`` is what the sender's app declares, in seconds."""
        voice = {**self._user_medium("AwACAgUSER", data, declare_size), "duration": duration}
        if mime_type is not None:
            voice["mime_type"] = mime_type
        return self._user_media_message("voice", voice, caption, options)

    def user_audio(
        self,
        data: bytes,
        *,
        duration: int = 30,
        file_name: str | None = "audio.mp3",
        mime_type: str | None = "audio/mpeg",
        title: str | None = None,
        performer: str | None = None,
        caption: str | None = None,
        declare_size: bool = True,
        **options: Any,
    ) -> JsonDict:
        """A user sends an audio file (shown as music by the apps)."""
        audio = {**self._user_medium("CQACAgUSER", data, declare_size), "duration": duration}
        optional = {"file_name": file_name, "mime_type": mime_type, "title": title, "performer": performer}
        audio.update({key: value for key, value in optional.items() if value is not None})
        return self._user_media_message("audio", audio, caption, options)

    def user_video_note(
        self, data: bytes, *, duration: int = 5, length: int = 240, declare_size: bool = True, **options: Any
    ) -> JsonDict:
        """A user sends a round video message (MP4; the Bot API gives no
        MIME type and no caption for these)."""
        note = {**self._user_medium("DQACAgUSER", data, declare_size), "duration": duration, "length": length}
        return self._user_media_message("video_note", note, None, options)

    def _user_medium(self, id_prefix: str, data: bytes, declare_size: bool) -> JsonDict:
        """The file part of a medium a user sends, ready for getFile and download."""
        number = next(self._file_ids)
        file_id, unique_id = f"{id_prefix}{number:06d}", f"AgADUSER{number:06d}"
        self._user_files[file_id] = (unique_id, data)
        medium: JsonDict = {"file_id": file_id, "file_unique_id": unique_id}
        if declare_size:
            medium["file_size"] = len(data)
        return medium

    def _user_media_message(self, kind: str, medium: JsonDict, caption: str | None, options: JsonDict) -> JsonDict:
        fields: JsonDict = {kind: medium}
        if caption:
            fields["caption"] = caption
            if found := _auto_entities(caption):
                fields["caption_entities"] = found
        return self.user_message(**options, **fields)

    def edited_text(
        self, message_id: int, text: str, *, chat_id: int = DEFAULT_CHAT, user_id: int | None = None
    ) -> JsonDict:
        """The user edited one of their earlier messages."""
        original = self._user_messages.get((chat_id, message_id))
        if original is None:
            raise ValueError(f"no user message {message_id} in chat {chat_id}")
        edited = {**original, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        if found := _auto_entities(text):
            edited["entities"] = found
        if user_id is not None:
            edited["from"] = self._users.get(user_id) or self._user(user_id, "Ann", None, None, "en")
        return self.add_update({"edited_message": edited})

    def callback_query(
        self,
        data: str,
        *,
        chat_id: int = DEFAULT_CHAT,
        user_id: int | None = None,
        message_id: int,
    ) -> JsonDict:
        """A press on an inline button of message `message_id`."""
        message = self._message_dict(chat_id, message_id)
        uid = user_id if user_id is not None else chat_id
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        query = {
            "id": query_id,
            "from": self._users.get(uid) or self._user(uid, "Ann", None, None, "en"),
            "message": message,
            "chat_instance": str(abs(chat_id) * 7919),
            "data": data,
        }
        return self.add_update({"callback_query": query})

    def add_update(self, update: JsonDict) -> JsonDict:
        """Queue a raw update (update_id assigned if missing) and wake pollers."""
        update = dict(update)
        if "update_id" in update:
            # keep ids increasing even when a test picks its own
            self._update_ids = itertools.count(max(update["update_id"] + 1, next(self._update_ids)))
        else:
            update["update_id"] = next(self._update_ids)
        self._remember(update)
        self._updates.append(update)
        self._wake_pollers()
        return update

    # ---------------------------------------------------------------- observing

    def calls_of(self, method: str) -> list[Call]:
        name = _CANONICAL.get(method.lower(), method)
        return [call for call in self.calls if call.method == name]

    def messages(self, chat_id: int, *, include_deleted: bool = False) -> list[SentMessage]:
        """Messages the bot sent to `chat_id`, oldest first."""
        return [m for m in self._sent.get(chat_id, []) if include_deleted or not m.deleted]

    def drafts(self, chat_id: int) -> list[Call]:
        """Accepted sendMessageDraft calls for `chat_id` (rejected ones stay in `calls`)."""
        return [
            call for call in self.calls_of("sendMessageDraft")
            if call.params.get("chat_id") == chat_id and call.status == 200
        ]

    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates offset."""
        return len(self._updates)

    def confirm_updates(self, up_to: int) -> None:
        """Forgets the updates up to ``up_to`` as a getUpdates offset past it
        would (what Telegram holds after a bot confirmed them and crashed)."""
        self._confirm(up_to + 1)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_LIMIT) -> None:
        """Wait until predicate() holds; re-checked on every request and every 20 ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            activity = self._activity  # grab before checking so no wake-up is missed
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(predicate, timeout))
            try:
                # the 20 ms cap covers predicates about state outside the fake
                await asyncio.wait_for(activity.wait(), min(remaining, 0.02))
            except TimeoutError:
                pass

    async def wait_messages(self, chat_id: int, count: int, timeout: float = WAIT_LIMIT) -> list[SentMessage]:
        await self.wait_for(lambda: len(self.messages(chat_id)) >= count, timeout)
        return self.messages(chat_id)

    # ---------------------------------------------------------------- faults

    def fail_next(
        self,
        method: str,
        *,
        status: int = 400,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        when: Callable[[JsonDict], bool] | None = None,
    ) -> None:
        """Answer the next `times` matching calls of `method` with this error.

        Faults are consumed in the order they were queued. A 429 always carries
        retry_after (default 1), as Telegram's do.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if status == 429
                else _DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")
            )
        name = _CANONICAL.get(method.lower(), method)
        self._faults.append(_Fault(name, status, description, retry_after, times, when))

    def block_bot(self, chat_id: int, description: str = _BLOCKED) -> None:
        """The user of this private chat blocked the bot (or, with
        description "Forbidden: user is deactivated", deleted their account):
        every send to the chat is answered 403 until ``unblock_bot``."""
        self._blocked[chat_id] = description

    def unblock_bot(self, chat_id: int) -> None:
        self._blocked.pop(chat_id, None)

    def _check_blocked(self, method: str, params: JsonDict) -> None:
        if method in _DELIVERING and self._blocked:
            description = self._blocked.get(_as_int(params.get("chat_id")) or 0)
            if description is not None:
                raise ApiError(403, description)

    def _take_fault(self, method: str, params: JsonDict) -> None:
        for fault in self._faults:
            if fault.method == method and (fault.when is None or fault.when(params)):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                raise ApiError(fault.status, fault.description, fault.retry_after)

    def enforce_limits(self, limits: TelegramLimits | None = None) -> None:
        """Answer sends past Telegram's flood limits with 429 and count them
        in ``limit_refusals`` (accepted sends are the 200 entries of ``calls``)."""
        self.telegram_limits = limits or TelegramLimits()

    def _check_flood(self, call: Call) -> None:
        limits = self.telegram_limits
        chat_id = _as_int(call.params.get("chat_id"))
        if limits is None or call.method not in _FLOOD_COUNTED or chat_id is None:
            return
        private = self._chat_type(chat_id) == "private"
        windows = (
            ("overall", limits.overall, limits.overall_period),
            (chat_id, *((limits.private, limits.private_period) if private else (limits.group, limits.group_period))),
        )
        for key, most, period in windows:
            times = self._flood_windows[key]
            while times and times[0] <= call.at - (period - limits.slack):
                times.popleft()
            if len(times) >= most:
                self.limit_refusals += 1
                wait = max(1, math.ceil(times[0] + period - call.at))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        for key, _, _ in windows:
            self._flood_windows[key].append(call.at)

    def _check_rate_limit(self, method: str) -> None:
        if self.rate_limit is None or method not in _RATE_LIMITED:
            return
        max_calls, per = self.rate_limit
        now = time.monotonic()
        while self._send_times and self._send_times[0] <= now - per:
            self._send_times.popleft()
        if len(self._send_times) >= max_calls:
            wait = max(1, math.ceil(self._send_times[0] + per - now))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        self._send_times.append(now)

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = Call(_CANONICAL.get(method.lower(), method), {}, time.monotonic())
        self.calls.append(call)
        self._notify()
        try:
            call.params = await _read_params(request)
            result = await self._dispatch(request.match_info["token"], call)
            body, call.status = {"ok": True, "result": result}, 200
        except ApiError as err:
            body, call.status, call.error = err.payload(), err.status, err.description
            if err.status == 429:
                self.too_many_requests += 1
        except asyncio.CancelledError:
            # the client hung up (e.g. PTB cancelled a long poll on shutdown)
            call.status, call.error = 499, "client disconnected"
            self._notify()
            raise
        except Exception:  # a bug in the fake: make it loud, not a hang
            call.status, call.error = 500, traceback.format_exc()
            body = {"ok": False, "error_code": 500, "description": f"Fake bug: {call.error}"}
        self._notify()
        return web.json_response(body, status=call.status)

    async def _dispatch(self, token: str, call: Call) -> Any:
        if token != self.token:
            # Telegram: well-formed but unknown token -> 401; garbage -> 404
            if re.fullmatch(r"\d+:[\w-]+", token):
                raise ApiError(401, "Unauthorized")
            raise ApiError(404, "Not Found")
        handler = self._handlers().get(call.method)
        if handler is None:
            raise ApiError(404, "Not Found")
        self._take_fault(call.method, call.params)
        self._check_rate_limit(call.method)
        self._check_flood(call)
        self._check_blocked(call.method, call.params)
        return await handler(call.params)

    def _handlers(self) -> dict[str, Callable[[JsonDict], Awaitable[Any]]]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getMyCommands": self._get_my_commands,
            "close": self._true,
            "logOut": self._true,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "sendMessageDraft": self._send_message_draft,
            "sendChatAction": self._send_chat_action,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "sendDocument": self._send_document,
            "sendPhoto": self._send_photo,
            "getFile": self._get_file,
        }

    def _notify(self) -> None:
        event, self._activity = self._activity, asyncio.Event()
        event.set()

    def _wake_pollers(self) -> None:
        event, self._updates_changed = self._updates_changed, asyncio.Event()
        event.set()
        self._notify()

    def _timeout_report(self, predicate: Callable[[], bool], timeout: float) -> str:
        name = getattr(predicate, "__qualname__", repr(predicate))
        lines = [f"condition {name} not met within {timeout}s; last calls:"]
        start = self.calls[0].at if self.calls else 0.0
        for call in self.calls[-20:]:
            params = json.dumps(call.params, default=repr, ensure_ascii=False)
            lines.append(
                f"  +{call.at - start:7.3f}s {call.method} -> {call.status or 'pending'} "
                f"{call.error or ''} {params[:300]}"
            )
        lines.append(f"pending updates: {self.pending_updates()}")
        for chat_id, sent in self._sent.items():
            lines.append(f"chat {chat_id}: {[m.text[:80] for m in sent if not m.deleted]}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- chats, users, messages

    def _chat_type(self, chat_id: int) -> str:
        if chat_id in self._chats:
            return str(self._chats[chat_id]["type"])
        if chat_id > 0:
            return "private"
        return "supergroup" if str(chat_id).startswith("-100") else "group"

    def _user(
        self, user_id: int, first_name: str, last_name: str | None,
        username: str | None, language_code: str | None,
    ) -> JsonDict:
        user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        optional = {"last_name": last_name, "username": username, "language_code": language_code}
        user.update({key: value for key, value in optional.items() if value is not None})
        self._users[user_id] = user
        return user

    def _chat(self, chat_id: int, kind: str, user: JsonDict, title: str | None) -> JsonDict:
        chat: JsonDict = {"id": chat_id, "type": kind}
        if kind == "private":
            chat.update({k: v for k, v in user.items() if k in ("first_name", "last_name", "username")})
        else:
            chat["title"] = title or self._chats.get(chat_id, {}).get("title") or "Test Group"
        self._chats[chat_id] = chat
        return chat

    def _chat_object(self, chat_id: int) -> JsonDict:
        """The chat as Telegram would describe it in the bot's own messages."""
        if chat_id in self._chats:
            return dict(self._chats[chat_id])
        kind = self._chat_type(chat_id)
        if kind == "private":
            return {"id": chat_id, "type": kind, "first_name": f"User{chat_id}"}
        return {"id": chat_id, "type": kind, "title": "Test Group"}

    def _remember(self, update: JsonDict) -> None:
        """Learn chats, users and messages from injected updates, like Telegram knows them."""
        for key in ("message", "edited_message"):
            message = update.get(key)
            if not isinstance(message, dict):
                continue
            chat, sender = message.get("chat"), message.get("from")
            if isinstance(chat, dict):
                self._chats[chat["id"]] = chat
                chat_id, message_id = chat["id"], message.get("message_id", 0)
                self._user_messages[(chat_id, message_id)] = message
                self._last_message_id[chat_id] = max(self._last_message_id[chat_id], message_id)
            if isinstance(sender, dict):
                self._users[sender["id"]] = sender

    def _next_message_id(self, chat_id: int) -> int:
        self._last_message_id[chat_id] += 1
        return self._last_message_id[chat_id]

    def _find_sent(self, chat_id: int, message_id: int) -> SentMessage | None:
        for message in self._sent.get(chat_id, []):
            if message.message_id == message_id and not message.deleted:
                return message
        return None

    def _message_dict(self, chat_id: int, message_id: int) -> JsonDict:
        sent = self._find_sent(chat_id, message_id)
        if sent is not None:
            return self._payload(sent)
        if (chat_id, message_id) in self._user_messages:
            return dict(self._user_messages[(chat_id, message_id)])
        raise ValueError(f"no message {message_id} in chat {chat_id}")

    def _payload(self, sent: SentMessage) -> JsonDict:
        """The Message object the API returns for a bot message."""
        message: JsonDict = {
            "message_id": sent.message_id,
            "from": dict(self.bot_user),
            "chat": self._chat_object(sent.chat_id),
            "date": sent.date,
        }
        if sent.message_thread_id is not None:
            message["message_thread_id"] = sent.message_thread_id
        if snapshot := self._reply_snapshots.get((sent.chat_id, sent.message_id)):
            message["reply_to_message"] = snapshot
        if sent.edit_date is not None:
            message["edit_date"] = sent.edit_date
        media = ("document", sent.document) if sent.document is not None else ("photo", sent.photo)
        if media[1] is not None:
            message[media[0]] = media[1]
            if sent.text:
                message["caption"] = sent.text
            if sent.entities:
                message["caption_entities"] = sent.entities
        else:
            message["text"] = sent.text
            if sent.entities:
                message["entities"] = sent.entities
        # Only inline keyboards are attached to the message; reply keyboards aren't echoed.
        if sent.reply_markup and "inline_keyboard" in sent.reply_markup:
            message["reply_markup"] = sent.reply_markup
        return message

    # ---------------------------------------------------------------- parameter checks

    def _chat_id(self, params: JsonDict) -> int:
        value = params.get("chat_id")
        if value is None or value == "":
            raise _bad_request("chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            for chat in self._chats.values():
                if chat.get("username", "").lower() == value[1:].lower():
                    return int(chat["id"])
            raise _bad_request("chat not found")
        chat_id = _as_int(value)
        if chat_id is None or chat_id == 0:
            raise _bad_request("chat not found")
        return chat_id

    @staticmethod
    def _message_id(params: JsonDict) -> int:
        message_id = _as_int(params.get("message_id"))
        if message_id is None:
            raise _bad_request("message identifier is not specified")
        return message_id

    @staticmethod
    def _reply_markup(params: JsonDict) -> JsonDict | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        return markup

    def _reply_target(self, chat_id: int, params: JsonDict) -> int | None:
        """message_id being replied to, or None; unknown targets fail like Telegram."""
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if reply is None:
            return None
        if not isinstance(reply, dict) or _as_int(reply.get("message_id")) is None:
            raise _bad_request("can't parse reply parameters JSON object")
        target = int(reply["message_id"])
        known = self._find_sent(chat_id, target) or self._user_messages.get((chat_id, target))
        if known:
            return target
        if reply.get("allow_sending_without_reply"):
            return None
        raise _bad_request("message to be replied not found")

    @staticmethod
    def _render(
        text: Any, parse_mode: Any, entities: Any, *, limit: int,
        allow_empty: bool = False, too_long: str = "message is too long",
    ) -> tuple[str, list[JsonDict], str | None]:
        """(visible text, entities, raw html or None) the way Telegram formats a text."""
        markup = "" if text is None else str(text)
        mode = str(parse_mode).lower() if parse_mode else ""
        html: str | None = None
        if isinstance(entities, list):
            visible, found = markup, entities  # explicit entities win over parse_mode
        elif mode == "html":
            try:
                visible, found = parse_html(markup)
            except EntityParseError as err:
                raise _bad_request(f"can't parse entities: {err}") from err
            html = markup
        elif mode in ("", "markdown", "markdownv2"):
            # Markdown is accepted but not interpreted: the fake only models HTML.
            visible, found = markup, []
        else:
            raise _bad_request("unsupported parse_mode")
        visible, found = _trim(visible, found)
        if not visible and not allow_empty:
            raise _bad_request("message text is empty")
        if utf16_len(visible) > limit:
            raise _bad_request(too_long)
        return visible, found, html

    # ---------------------------------------------------------------- methods: bot & polling

    async def _true(self, params: JsonDict) -> bool:
        return True

    async def _get_me(self, params: JsonDict) -> JsonDict:
        return dict(self.bot_user)

    async def _delete_webhook(self, params: JsonDict) -> bool:
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        await self._stop_pushing()
        return True

    # ---------------------------------------------------------------- methods: webhook

    @property
    def webhook(self) -> Webhook | None:
        """The webhook setWebhook set, or None (getUpdates works)."""
        return self._pusher.webhook if self._pusher is not None else None

    async def _set_webhook(self, params: JsonDict) -> bool:
        url = params.get("url") or ""
        if not url:  # as on Telegram: an empty url removes the webhook
            return await self._delete_webhook(params)
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad_request("secret token contains unallowed characters")
        # http too, as a local Bot API server (--local) allows; the cloud wants https.
        if not re.match(r"https?://[^/?#]+", url):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        max_connections = _as_int(params.get("max_connections")) or 40
        if "allowed_updates" in params:  # persists, as for getUpdates
            self._allowed_updates = list(params["allowed_updates"]) or None
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        await self._stop_pushing()
        webhook = Webhook(url, secret, max(1, min(max_connections, 100)), self._allowed_updates)
        self._pusher = WebhookPusher(
            webhook,
            next_update=self._next_for_webhook,
            delivered=self._delivered_to_webhook,
            changed=lambda: self._updates_changed,
            record=self._record_delivery,
        )
        self._pusher.start()
        self._wake_pollers()  # a long poll in progress ends with 409
        return True

    async def _get_webhook_info(self, params: JsonDict) -> JsonDict:
        if self._pusher is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}
        return self._pusher.webhook.info(len(self._updates))

    async def _stop_pushing(self) -> None:
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            await pusher.stop()

    def _next_for_webhook(self) -> JsonDict | None:
        ready = self._deliverable(1)
        return ready[0] if ready else None

    def _delivered_to_webhook(self, update_id: int) -> None:
        self._updates = [u for u in self._updates if u["update_id"] != update_id]
        self._notify()

    def _record_delivery(self, delivery: WebhookDelivery) -> None:
        self.webhook_deliveries.append(delivery)
        self._notify()

    @staticmethod
    def _commands_key(params: JsonDict) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _set_my_commands(self, params: JsonDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            name = command.get("command", "") if isinstance(command, dict) else ""
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self._commands[self._commands_key(params)] = commands
        return True

    async def _delete_my_commands(self, params: JsonDict) -> bool:
        self._commands.pop(self._commands_key(params), None)
        return True

    async def _get_my_commands(self, params: JsonDict) -> list[JsonDict]:
        return list(self._commands.get(self._commands_key(params), []))

    async def _get_updates(self, params: JsonDict) -> list[JsonDict]:
        if self._pusher is not None:
            raise ApiError(409, _WEBHOOK_ACTIVE)
        offset = _as_int(params.get("offset")) or 0
        limit = min(max(_as_int(params.get("limit")) or 100, 1), 100)
        raw_timeout = params.get("timeout")
        # The real API wants whole seconds; fractions are allowed here to keep tests quick.
        timeout = max(float(raw_timeout), 0.0) if isinstance(raw_timeout, int | float) else 0.0
        if "allowed_updates" in params:
            # persists across calls, like the real setting; [] means "the default set"
            allowed = params["allowed_updates"]
            self._allowed_updates = list(allowed) if allowed else None
        self._confirm(offset)
        # A newer getUpdates terminates an older one with 409, as on Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._pusher is not None:
                raise ApiError(409, _WEBHOOK_ACTIVE)
            if generation != self._poll_generation and not self._stopping:
                raise ApiError(409, _DEFAULT_DESCRIPTIONS[409])
            ready = self._deliverable(limit)
            remaining = deadline - loop.time()
            if ready or self._stopping or remaining <= 0:
                return ready
            changed = self._updates_changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _deliverable(self, limit: int) -> list[JsonDict]:
        # Updates of types the bot didn't ask for would never have been created.
        self._updates = [u for u in self._updates if self._is_allowed(u)]
        return [json.loads(json.dumps(u)) for u in self._updates[:limit]]

    def _is_allowed(self, update: JsonDict) -> bool:
        kinds = [key for key in update if key != "update_id"]
        kind = kinds[0] if kinds else ""
        if self._allowed_updates is None:
            return kind not in _OPT_IN_UPDATES
        return kind in self._allowed_updates

    # ---------------------------------------------------------------- methods: messages

    async def _send_message(self, params: JsonDict) -> JsonDict:
        chat_id = self._chat_id(params)
        text, entities, html = self._render(
            params.get("text"), params.get("parse_mode"), params.get("entities"), limit=_MAX_TEXT
        )
        markup = self._reply_markup(params)
        sent = self._store_sent(chat_id, params, text=text, entities=entities, html=html, markup=markup)
        return self._payload(sent)

    def _store_sent(
        self, chat_id: int, params: JsonDict, *, text: str, entities: list[JsonDict],
        html: str | None, markup: JsonDict | None,
    ) -> SentMessage:
        reply_to = self._reply_target(chat_id, params)
        sent = SentMessage(
            chat_id=chat_id,
            message_id=self._next_message_id(chat_id),
            text=text,
            html=html,
            parse_mode=params.get("parse_mode"),
            entities=entities,
            reply_markup=markup,
            reply_to_message_id=reply_to,
            date=int(time.time()),
            message_thread_id=_as_int(params.get("message_thread_id")),
        )
        if reply_to is not None:
            snapshot = self._message_dict(chat_id, reply_to)
            snapshot.pop("reply_to_message", None)  # Telegram doesn't nest replies
            self._reply_snapshots[(chat_id, sent.message_id)] = snapshot
        self._sent[chat_id].append(sent)
        return sent

    async def _edit_message_text(self, params: JsonDict) -> JsonDict:
        if params.get("inline_message_id") is not None:
            raise _bad_request("inline messages are not modelled by this fake")
        chat_id = self._chat_id(params)
        message_id = self._message_id(params)
        sent = self._find_sent(chat_id, message_id)
        if sent is None:
            if (chat_id, message_id) in self._user_messages:
                raise _bad_request("message can't be edited")
            raise _bad_request("message to edit not found")
        text, entities, html = self._render(
            params.get("text"), params.get("parse_mode"), params.get("entities"), limit=_MAX_TEXT
        )
        # Omitting reply_markup removes the keyboard, so it is part of "content".
        markup = self._reply_markup(params)
        if (text, entities, markup) == (sent.text, sent.entities, sent.reply_markup):
            raise ApiError(400, _NOT_MODIFIED)
        sent.text, sent.entities, sent.html, sent.reply_markup = text, entities, html, markup
        sent.parse_mode = params.get("parse_mode")
        sent.edits.append(text)
        sent.edit_date = int(time.time())
        return self._payload(sent)

    async def _send_message_draft(self, params: JsonDict) -> bool:
        chat_id = self._chat_id(params)
        if self._chat_type(chat_id) != "private":
            raise _bad_request("TEXTDRAFT_PEER_INVALID")
        if not _as_int(params.get("draft_id")):
            raise _bad_request("DRAFT_ID_INVALID")
        # An empty draft is allowed: clients show it as a "thinking" placeholder.
        self._render(
            params.get("text"), params.get("parse_mode"), params.get("entities"),
            limit=_MAX_TEXT, allow_empty=True,
        )
        return True

    async def _send_chat_action(self, params: JsonDict) -> bool:
        self._chat_id(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    async def _delete_message(self, params: JsonDict) -> bool:
        chat_id = self._chat_id(params)
        message_id = self._message_id(params)
        sent = self._find_sent(chat_id, message_id)
        if sent is not None:
            sent.deleted = True
            return True
        if self._user_messages.pop((chat_id, message_id), None) is not None:
            return True
        raise _bad_request("message to delete not found")

    async def _answer_callback_query(self, params: JsonDict) -> bool:
        query_id = params.get("callback_query_id")
        if query_id not in self._open_callbacks:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(str(query_id))
        return True

    async def _send_document(self, params: JsonDict) -> JsonDict:
        chat_id = self._chat_id(params)
        document, upload = self._document(params)
        sent = self._store_captioned(chat_id, params)
        sent.document, sent.file = document, upload
        return self._payload(sent)

    async def _send_photo(self, params: JsonDict) -> JsonDict:
        chat_id = self._chat_id(params)
        sizes, upload = self._photo(params)
        sent = self._store_captioned(chat_id, params)
        sent.photo, sent.file = sizes, upload
        return self._payload(sent)

    def _store_captioned(self, chat_id: int, params: JsonDict) -> SentMessage:
        """A media message: its caption checked like Telegram does, then stored."""
        caption, entities, html = self._render(
            params.get("caption"), params.get("parse_mode"), params.get("caption_entities"),
            limit=_MAX_CAPTION, allow_empty=True, too_long="message caption is too long",
        )
        markup = self._reply_markup(params)
        return self._store_sent(chat_id, params, text=caption, entities=entities, html=html, markup=markup)

    def _photo(self, params: JsonDict) -> tuple[list[JsonDict], UploadedFile | None]:
        """PhotoSizes for an uploaded image (decoded, as Telegram does) or for
        the file_id of a photo sent before."""
        value = params.get("photo")
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value[len("attach://") :])
        if isinstance(value, str) and value:
            for sent in (m for chat in self._sent.values() for m in chat):
                if sent.photo and any(size["file_id"] == value for size in sent.photo):
                    return [dict(size) for size in sent.photo], None
            raise _bad_request("wrong file identifier/HTTP URL specified")
        if not isinstance(value, UploadedFile):
            raise _bad_request("there is no photo in the request")
        if len(value.data) > _MAX_PHOTO_BYTES:
            raise _bad_request("PHOTO_SAVE_FILE_INVALID")
        width, height = _image_size(value.data)
        if width + height > _MAX_PHOTO_SIDES or max(width, height) > _MAX_PHOTO_RATIO * min(width, height):
            raise _bad_request("PHOTO_INVALID_DIMENSIONS")
        return self._photo_sizes(width, height, len(value.data)), value

    def _photo_sizes(self, width: int, height: int, file_size: int) -> list[JsonDict]:
        sizes: list[JsonDict] = []
        for box in _PHOTO_BOXES:
            scale = min(1.0, box / max(width, height))
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            number = next(self._file_ids)
            sizes.append({
                "file_id": f"AgACAgFAKE{number:06d}",
                "file_unique_id": f"AQADFAKE{number:06d}",
                "width": w,
                "height": h,
                # Telegram re-encodes each size; the fake scales by area.
                "file_size": max(1, round(file_size * (w * h) / (width * height))),
            })
            if scale == 1.0:
                break
        return sizes

    async def _get_file(self, params: JsonDict) -> JsonDict:
        file_id = params.get("file_id")
        if not isinstance(file_id, str) or file_id not in self._user_files:
            raise _bad_request("invalid file_id")
        unique_id, data = self._user_files[file_id]
        if len(data) > _MAX_DOWNLOAD:
            raise _bad_request("file is too big")
        file_path = f"documents/file_{file_id[-6:]}"
        self._file_paths[file_path] = data
        return {"file_id": file_id, "file_unique_id": unique_id, "file_size": len(data), "file_path": file_path}

    async def _download(self, request: web.Request) -> web.Response:
        """Files are served from {root}/file/bot{token}/{file_path}, as raw bytes."""
        path = request.match_info["file_path"]
        if request.match_info["token"] != self.token or path not in self._file_paths:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        self.downloads.append(path)
        self._notify()
        return web.Response(body=self._file_paths[path], content_type="application/octet-stream")

    def _document(self, params: JsonDict) -> tuple[JsonDict, UploadedFile | None]:
        value = params.get("document")
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value[len("attach://") :])
        number = next(self._file_ids)
        if isinstance(value, UploadedFile):
            document: JsonDict = {
                "file_id": f"BQACAgFAKE{number:06d}",
                "file_unique_id": f"AgADFAKE{number:06d}",
                "file_name": value.filename,
                "mime_type": value.content_type,
                "file_size": len(value.data),
            }
            return document, value
        if isinstance(value, str) and value:
            return {"file_id": value, "file_unique_id": f"AgADFAKE{number:06d}"}, None
        raise _bad_request("there is no document in the request")
