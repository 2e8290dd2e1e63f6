"""RequestContext: who is asking, where, and when; built once per update by
ContextMiddleware and passed explicitly to everything a turn touches."""

from __future__ import annotations

import contextvars
import logging
import uuid
from datetime import datetime, timezone
from enum import StrEnum

import pytz
from pydantic import BaseModel, ConfigDict, field_validator

from bot.auth import AuthProvider, Role
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
        return self.chat_type in (ChatType.PRIVATE, ChatType.CONSOLE)

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


class SecretsFilter(logging.Filter):
    """Replaces known secret values in log output (the bot token appears in
    Telegram URLs that HTTP libraries log)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, secrets: list[str], log_file: str | None = None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    handler.addFilter(RequestIdFilter())
    handler.addFilter(SecretsFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
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
    ) -> RequestContext:
        user = await self._users.visit(profile, lambda stored: self._auth.effective_role(profile.id, stored).value)
        role = self._auth.effective_role(user.id, user.role)
        request_id = new_request_id()
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
        )
