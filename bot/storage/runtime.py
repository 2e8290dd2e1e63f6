"""Settings an admin changes from the chat at run time (the model tiers'
order, disabled tiers, pinned prompt versions). One JSON value per key, kept
across restarts in ``runtime_settings``."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from bot.storage.db import Database, insert_for
from bot.storage.models import RuntimeSetting
from bot.runtime.clock import utcnow

log = logging.getLogger(__name__)

KEY_LENGTH = 64  # the column's width


class RuntimeSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> Any | None:
        """The stored value, or None when the key was never set. A value that
        is not valid JSON (edited by hand) counts as unset, with a log line:
        the bot then runs on its configuration instead of failing to start."""
        async with self._db.reading() as s:
            raw = (await s.execute(select(RuntimeSetting.value).where(RuntimeSetting.key == key))).scalar_one_or_none()
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            log.error("runtime setting %r is not valid JSON; ignoring it", key)
            return None

    async def set(self, key: str, value: Any, *, by: int | None = None) -> None:
        """Store ``value`` (anything json.dumps takes) under ``key``, replacing what was there."""
        if not key or len(key) > KEY_LENGTH:
            raise ValueError(f"a runtime setting key has 1 to {KEY_LENGTH} characters")
        encoded = json.dumps(value, ensure_ascii=False, sort_keys=True)
        values = {"key": key, "value": encoded, "updated_at": utcnow(), "updated_by": by}
        async with self._db.session() as s:
            statement = insert_for(s)(RuntimeSetting).values(**values)
            # An upsert, so two admins changing one setting at once cannot collide on the key.
            await s.execute(
                statement.on_conflict_do_update(
                    index_elements=["key"],
                    set_={name: statement.excluded[name] for name in ("value", "updated_at", "updated_by")},
                )
            )
