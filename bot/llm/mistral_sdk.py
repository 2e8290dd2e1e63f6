"""The mistralai SDK, with the pydantic classes it builds per request reused.

For every request the SDK validates each argument and serializes the body
through a pydantic model class that it creates on the spot
(``create_model("Unmarshaller" | "Marshaller", body=(type, ...))`` in
``mistralai.client.utils.serializers``): about seven classes per chat
request, each with its full schema generation, most of the CPU a Mistral
turn spends before its request leaves. The class depends only on the type,
so one per type is built and kept; the SDK still validates and serializes
every request exactly as before, and stays the transport.

Installed while a MistralProvider is open (``reuse_sdk_models`` /
``release_sdk_models``), so other users of the SDK in the same process (the
benchmarks' thinnest bot) keep the stock behaviour once the bot is closed."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

# Distinct (name, type) pairs kept at most: the SDK's own types are a few
# dozen; past this, classes are built per call as the SDK does.
MAX_KEPT = 512

_lock = threading.Lock()
_users = 0
_original: Any = None
_built: dict[Any, Any] = {}


def _kept_create_model(model_name: str, /, **fields: Any) -> Any:
    """pydantic.create_model for the SDK's serializers: the same class for the same type."""
    original = _original
    assert original is not None
    if set(fields) != {"body", "__config__"}:
        return original(model_name, **fields)
    config = fields["__config__"]
    try:
        key = (model_name, fields["body"], tuple(sorted(config.items())) if config else None)
        model = _built.get(key)
    except TypeError:  # a type that cannot be hashed: built per call, as the SDK does
        return original(model_name, **fields)
    if model is None:
        model = original(model_name, **fields)
        if len(_built) < MAX_KEPT:
            _built[key] = model
    return model


def reuse_sdk_models() -> None:
    """Start reusing the SDK's per-type classes (counted: one call per open provider)."""
    global _users, _original
    with _lock:
        _users += 1
        if _users > 1:
            return
        try:
            from mistralai.client.utils import serializers
        except ImportError:  # another SDK layout: it builds its classes itself
            return
        if not callable(getattr(serializers, "create_model", None)):
            log.info("mistralai SDK without create_model in its serializers; nothing to reuse")
            return
        _original = serializers.create_model
        serializers.create_model = _kept_create_model


def release_sdk_models() -> None:
    """The last open provider closed: the SDK builds its classes itself again."""
    global _users, _original
    with _lock:
        _users = max(0, _users - 1)
        if _users or _original is None:
            return
        from mistralai.client.utils import serializers

        if serializers.create_model is _kept_create_model:
            serializers.create_model = _original
        _original = None
        _built.clear()
