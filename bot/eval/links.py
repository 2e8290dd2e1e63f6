"""Signed links to the evaluation results page, and the session that a
link opens.

A token is ``<expiry>.<signature>``: the expiry in Unix seconds and an
HMAC-SHA256 over a purpose label and that expiry, with a secret kept in
BOT_DATA_DIR. Nothing else is stored: whoever holds an unexpired token is
an admin on the page until it expires. The purpose label keeps the two
kinds apart, so a session cookie cannot be pasted into a link as a fresh
one-hour token and a link cannot stand in for a longer session.

The secret file is made on first use (mode 0600) and never logged; deleting
it invalidates every link and session at once."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlencode

SECRET_FILE = "eval_page.secret"
LINK_TTL = 3600  # a link from /eval opens the page within the hour
SESSION_TTL = 8 * 3600  # then the browser keeps a session for a working day
_SECRET_BYTES = 32


class Purpose(StrEnum):
    LINK = "eval-link"
    SESSION = "eval-session"


class EvalLinks:
    """Signs and checks the page's tokens. ``clock`` answers Unix seconds
    (tests make tokens that have expired without waiting)."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._secret_path = data_dir / SECRET_FILE
        self._secret: bytes | None = None
        self._clock = clock

    def issue(self, purpose: Purpose, ttl: int) -> str:
        """A token of ``purpose`` valid for ``ttl`` seconds from now."""
        return self.sign(purpose, int(self._clock()) + ttl)

    def sign(self, purpose: Purpose, expires_at: int) -> str:
        return f"{expires_at}.{self._signature(purpose, expires_at)}"

    def valid(self, purpose: Purpose, token: str | None) -> bool:
        """True for an unexpired token of ``purpose`` signed with our secret."""
        expires_at = _expiry_of(token)
        if expires_at is None or expires_at <= self._clock():
            return False
        assert token is not None
        _, _, signature = token.partition(".")
        return hmac.compare_digest(signature, self._signature(purpose, expires_at))

    def page_link(self, root: str, path: str = "/eval") -> str:
        """A fresh link to the page at ``root`` (API_PUBLIC_URL), valid for LINK_TTL."""
        return f"{root.rstrip('/')}{path}?{urlencode({'token': self.issue(Purpose.LINK, LINK_TTL)})}"

    def _signature(self, purpose: Purpose, expires_at: int) -> str:
        message = f"{purpose.value}:{expires_at}".encode()
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = _load_or_create_secret(self._secret_path)
        return self._secret


def _expiry_of(token: str | None) -> int | None:
    if not token:
        return None
    expires, dot, signature = token.partition(".")
    # Bounded: a huge number from a forged token must not reach int() arithmetic unchecked.
    if not dot or not expires.isdigit() or len(expires) > 12 or len(signature) != 64:
        return None
    return int(expires)


def _load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``; made there first if missing. Written to a
    private temporary file and linked into place, so no process ever reads a
    half-written secret, and two processes starting at once agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        staged = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(_SECRET_BYTES))
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # another process won the race: its secret it is
        finally:
            staged.unlink()
    text = path.read_text().strip()
    if len(text) < 2 * _SECRET_BYTES:
        # Emptied or cut by hand: a short key would sign weak tokens.
        raise ValueError(f"{path} does not hold a usable secret; delete it and a new one is made")
    return text.encode()
