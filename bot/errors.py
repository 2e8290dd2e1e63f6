"""Arium's own exceptions. Library errors are translated at the boundary that
meets them (``raise X(...) from exc``), so callers catch only these classes.

::

    AriumError
    ├── ConfigError                 a setting is missing, malformed or conflicting
    ├── StorageError                the database could not do what was asked
    ├── MemoryStoreError            long-term memory could not do what was asked
    │   ├── EmbedderUnavailable     the embedding model is still loading, or failed to
    │   └── IndexFileError          a saved FAISS index is missing, stale or corrupt
    │                               (recovered by rebuilding from the database)
    ├── PromptError
    │   ├── PromptNotFound          no template with that name (or version)
    │   └── PromptVariablesError    a render missed declared variables, or a
    │                               template uses undeclared ones
    └── ModelError                  a model endpoint failed; carries the endpoint
        ├── ModelTransientError     connect error, timeout, 5xx: worth a retry
        │   ├── ModelConnectError   nothing reached the server (refused, DNS, TLS)
        │   └── ModelRateLimited    429; ``retry_after`` seconds when the server said
        ├── ModelAuthError          401/403: the key is wrong; never retried
        ├── ModelNotFoundError      404: the model or URL does not exist
        ├── ContextLengthError      the prompt is larger than the model's window
        ├── ModelBadRequest         the server refused our payload (other 4xx)
        ├── StreamBrokenError       the stream died after tokens were shown
        ├── TranscriptionFailed     no transcription endpoint turned the audio into
        │                           text; ``failures`` lists why, one per endpoint
        ├── ModelUnavailable        every tier failed; ``failures`` lists why
        └── NoVisionModel           the request carries images and no enabled
                                    endpoint takes them (``vision = true``)
    SendError                       a message could not reach its chat (a reminder,
    │                               a broadcast); each sender has its own kinds
    ├── RecipientBlocked            the chat will not take messages: the user blocked
    │                               the bot, or the account or chat is gone
    ├── DeliveryError               a reminder's (bot/reminders/notifier.py)
    └── BroadcastSendError          a broadcast's (bot/admin/broadcast.py)
    ToolError                       a tool refuses or fails in a way the model may
                                    be told (bad path, over quota, unknown zone)
    UpdateNotAccepted               an incoming update (a webhook's) cannot be taken
                                    now; the sender should deliver it again later
"""

from __future__ import annotations


class AriumError(Exception):
    """Base of every error Arium raises on purpose."""


class ConfigError(AriumError):
    """A setting is missing, malformed or conflicts with another."""


class StorageError(AriumError):
    """The database could not do what was asked."""


class MemoryStoreError(AriumError):
    """Long-term memory could not do what was asked."""


class EmbedderUnavailable(MemoryStoreError):
    """The embedding model is not loaded (yet, or it failed to load)."""


class IndexFileError(MemoryStoreError):
    """A saved index file cannot be used; the message says why."""


class PromptError(AriumError):
    """A prompt template could not be found or rendered."""


class PromptNotFound(PromptError):
    """No template has the requested name (or version)."""


class PromptVariablesError(PromptError):
    """Variables and template disagree; the message names the variables."""


class ModelError(AriumError):
    """A model endpoint failed. ``endpoint`` names it (never a secret)."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class ModelTransientError(ModelError):
    """Connect error, timeout or 5xx: the same endpoint may answer on a retry."""


class ModelConnectError(ModelTransientError):
    """The request never reached the server: refused, unresolvable, TLS failure."""


class ModelRateLimited(ModelTransientError):
    """HTTP 429; ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    """401/403: the key is missing or wrong."""


class ModelNotFoundError(ModelError):
    """404: the model name or the base URL is wrong."""


class ContextLengthError(ModelError):
    """The prompt does not fit the model's context window."""


class ModelBadRequest(ModelError):
    """The server refused the payload we sent (a 4xx other than the above)."""


class StreamBrokenError(ModelError):
    """The stream failed after some text was already produced."""

    def __init__(self, message: str, *, endpoint: str = "", partial_text: str = "") -> None:
        super().__init__(message, endpoint=endpoint)
        self.partial_text = partial_text
        # "tier/provider:model", set by the fallback chain: the label a
        # complete answer's Completion.endpoint carries, for usage and /stats.
        self.answered_by = ""


class TranscriptionFailed(ModelError):
    """Every transcription endpoint failed; ``failures`` holds each one's
    translated error, in the order they were tried."""

    def __init__(self, message: str, *, failures: list[ModelError]) -> None:
        super().__init__(message)
        self.failures = failures

    @property
    def audio_refused(self) -> bool:
        """Every endpoint refused the audio itself (a format it cannot
        read), rather than being down or misconfigured: sending it again
        would not help, another format might."""
        return bool(self.failures) and all(isinstance(f, ModelBadRequest) for f in self.failures)


class ModelUnavailable(ModelError):
    """Every endpoint of every tier failed (or was skipped by its breaker)."""

    def __init__(self, message: str, *, failures: list[ModelError]) -> None:
        super().__init__(message)
        self.failures = failures


class NoVisionModel(ModelError):
    """A request with images, and no enabled endpoint of the chain can see."""


class SendError(AriumError):
    """A message could not reach its chat."""


class RecipientBlocked(SendError):
    """The chat will not take messages (the user blocked the bot, or the
    account or chat is gone): never retried. Reminders to it pause; a
    broadcast marks the user inactive."""


class ToolError(AriumError):
    """A tool cannot do what the model asked; the message is shown to the model
    as the tool's result, so it must say what to change and leak nothing."""


class UpdateNotAccepted(AriumError):
    """An incoming update cannot be taken right now (the bot is starting or
    stopping, a broker is down). The webhook answers 503, so Telegram keeps
    the update and delivers it again later: nothing is lost."""
