"""RequestContext: who is asking, where, and when; built once per update by
ContextMiddleware and passed explicitly to everything a turn touches."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from enum import StrEnum
from logging.handlers import RotatingFileHandler
from pathlib import Path
from urllib.parse import quote

import pytz
from pydantic import BaseModel, ConfigDict, field_validator

from bot.auth import AuthProvider, Role
from bot.identity import identity_channel
from bot.storage.repositories import UserProfile, UserRepository

# The request id of the turn being handled, read by the log filter below so that
# every log line of a turn carries it without passing loggers around.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

SUPPORTED_LANGUAGES = ("en", "ru")


class ChatType(StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"
    CHANNEL = "channel"
    CONSOLE = "console"
    API = "api"  # the HTTP API: one user, their own client


class RequestContext(BaseModel):
    """Everything a turn knows about its origin. Immutable and JSON-serializable."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    chat_id: int
    chat_type: ChatType
    role: Role
    language: str
    timezone: str
    user_name: str
    request_id: str
    received_at: datetime
    # Access and limits (read by the gates): admitted in allow-list mode, and
    # the per-user daily token budget (None: the configured default).
    allowed: bool = False
    token_budget: int | None = None
    # A turn a crash cut short, finished at the next start (bot/recovery.py):
    # request_id is the original turn's, so its recorded tool rounds are found.
    resumed: bool = False
    # This message created the user: nothing is stored about them yet (no
    # memories to recall).
    first_contact: bool = False
    # Set only on the copy a tool function receives (bot/tools/manager.py):
    # the turn's request id plus a hash of the tool's name and arguments, so
    # the same call made again by the same turn after a crash has the same
    # key. A tool with a side effect stores it with the effect (a UNIQUE
    # column) and finds its first result instead of doing it twice.
    tool_call_key: str | None = None

    @field_validator("language")
    @classmethod
    def _normalize_language(cls, value: str) -> str:
        base = (value or "en").split("-")[0].lower()
        return base if base in SUPPORTED_LANGUAGES else "en"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if value not in pytz.all_timezones_set:
            raise ValueError(f"unknown time zone {value!r}")
        return value

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @property
    def is_private(self) -> bool:
        return self.chat_type in (ChatType.PRIVATE, ChatType.CONSOLE, ChatType.API)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def local_now(self, now: datetime | None = None) -> datetime:
        moment = now or datetime.now(timezone.utc)
        return moment.astimezone(pytz.timezone(self.timezone))


def new_request_id() -> str:
    return uuid.uuid4().hex[:12]


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a turn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True


class SecretMasker:
    """Replaces known secret values with ``***`` in any text: log lines,
    tracebacks, admin alerts, error replies. The URL-encoded form of each
    secret is masked too (a token's ``:`` becomes ``%3A`` inside URLs)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= 6:  # shorter values would mask ordinary words
                forms.update((secret, quote(secret, safe="")))
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text


# A URL ends at whitespace, a quote or an angle bracket, so these never eat
# into HTML markup around a URL.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@<>\"']*@")
_URL_TAIL = re.compile(r"(?P<url>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#<>\"']*)[?#][^\s<>\"']*")
# A Telegram bot token anywhere, e.g. inside a Bot API URL an HTTP error quotes
# ("/bot123456789:AAH..."): digits, a colon, ~35 URL-safe characters.
_BOT_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}")


def strip_url_secrets(text: str) -> str:
    """Removes credentials, query strings and fragments from every URL in ``text``."""
    return _URL_TAIL.sub(r"\g<url>", _URL_CREDENTIALS.sub(r"\g<scheme>", text))


class Redactor(SecretMasker):
    """The last line of defence for anything shown to admins (alerts, /health,
    /stats, /models): known secrets, plus token-shaped text and URL
    credentials, queries and fragments, whether configured or not."""

    def __call__(self, text: str) -> str:
        return _BOT_TOKEN.sub("***", strip_url_secrets(super().__call__(text)))


class SecretsFilter(logging.Filter):
    """Masks known secret values in log output (the bot token appears in
    Telegram URLs that HTTP libraries log), in the message and in the
    traceback of a logged exception, whose text may quote a secret too."""

    def __init__(self, secrets: list[str] | SecretMasker) -> None:
        super().__init__()
        self._mask = secrets if isinstance(secrets, SecretMasker) else SecretMasker(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._mask:
            return True
        message = record.getMessage()
        redacted = self._mask(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatter.format() uses exc_text when it is set: format the
            # traceback here, once, so the masked text is what gets written.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def configure_logging(
    level: str,
    secrets: list[str],
    log_file: str | None = None,
    *,
    max_bytes: int = 0,
    backup_count: int = 0,
    also_stderr: bool = False,
) -> None:
    """Log to ``log_file`` (rotated by size when ``max_bytes`` > 0, keeping
    ``backup_count`` old files) and/or stderr. The bot owns its log file, so
    rotation works without shell redirection holding the old file open."""
    handlers: list[logging.Handler] = []
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        )
    if not log_file or also_stderr:
        handlers.append(logging.StreamHandler())
    masker = SecretMasker(secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(RequestIdFilter())
        handler.addFilter(SecretsFilter(masker))
        root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and Telegram URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class ContextMiddleware:
    """Turns what a channel knows about a message into a validated
    RequestContext: records the user (first contact creates them), resolves
    the role, and picks language and time zone.

    The user row is read on every message and never cached here, so a ban,
    an admission or a new budget applies from the user's next message."""

    def __init__(self, users: UserRepository, auth: AuthProvider) -> None:
        self._users = users
        self._auth = auth

    async def build(
        self,
        profile: UserProfile,
        *,
        chat_id: int,
        chat_type: ChatType | str,
        received_at: datetime | None = None,
        request_id: str | None = None,
    ) -> RequestContext:
        # A Telegram or console profile names the person in that channel (an
        # identity, which /link may have joined to another user); the API's
        # key already named the user. Roles follow the channel's id: an admin
        # is an admin in Telegram by BOT_ADMIN_IDS and at the console by its settings.
        user = await self._users.visit(
            profile,
            lambda stored: self._auth.effective_role(profile.id, stored).value,
            channel=identity_channel(ChatType(chat_type).value),
        )
        role = self._auth.effective_role(profile.id, user.role)
        request_id = request_id or new_request_id()
        current_request_id.set(request_id)
        return RequestContext(
            user_id=user.id,
            chat_id=chat_id,
            chat_type=ChatType(chat_type),
            role=role,
            language=profile.language or user.language,
            timezone=user.timezone,
            user_name=user.first_name or (f"@{user.username}" if user.username else "friend"),
            request_id=request_id,
            received_at=received_at or datetime.now(timezone.utc),
            allowed=user.allowed,
            token_budget=user.token_budget,
            first_contact=user.first_contact,
        )
