"""A user's data as a list of sections, each able to export and to erase
itself: /export writes every section into one JSON document, /deleteme
erases every section. A feature that stores something about a user (memory,
reminders, ...) adds a section here at composition, so neither command needs
to know the features."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from bot.memory.service import MemoryService
from bot.storage.userdata import UserDataRepository
from bot.tools.sandbox import FileSandbox

EXPORT_FORMAT = "arium-export/1"


class UserDataSection(Protocol):
    name: str

    async def export(self, user_id: int) -> Any:
        """This section's data of the user, JSON-serializable."""

    async def erase(self, user_id: int) -> int:
        """Delete this section's data of the user; returns how many items went."""


class UserData:
    def __init__(self, sections: Sequence[UserDataSection] = ()) -> None:
        self._sections: list[UserDataSection] = list(sections)

    def add(self, section: UserDataSection) -> None:
        if section.name in self.names or section.name in ("format", "exported_at", "user_id"):
            raise ValueError(f"user data section name {section.name!r} is taken")
        self._sections.append(section)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._sections]

    async def export(self, user_id: int) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "exported_at": datetime.now(timezone.utc).isoformat(),
            "user_id": user_id,
        }
        for section in self._sections:
            document[section.name] = await section.export(user_id)
        return document

    async def export_json(self, user_id: int) -> bytes:
        document = await self.export(user_id)
        return json.dumps(document, ensure_ascii=False, indent=2, default=str).encode("utf-8")

    async def erase(self, user_id: int) -> dict[str, int]:
        """Erase every section, last added first, so the profile (which other
        rows refer to) goes last."""
        return {section.name: await section.erase(user_id) for section in reversed(self._sections)}


class ProfileSection:
    name = "profile"

    def __init__(self, repository: UserDataRepository) -> None:
        self._repository = repository

    async def export(self, user_id: int) -> Any:
        return await self._repository.profile(user_id)

    async def erase(self, user_id: int) -> int:
        return await self._repository.delete_profile(user_id)


class HistorySection:
    name = "history"

    def __init__(self, repository: UserDataRepository) -> None:
        self._repository = repository

    async def export(self, user_id: int) -> Any:
        return await self._repository.history(user_id)

    async def erase(self, user_id: int) -> int:
        return await self._repository.delete_history(user_id)


class MemorySection:
    name = "memories"

    def __init__(self, memory: MemoryService) -> None:
        self._memory = memory

    async def export(self, user_id: int) -> Any:
        return [
            {
                "id": m.id,
                "text": m.text,
                "kind": m.kind,
                "importance": m.importance,
                "source": m.source,
                "created_at": m.created_at.isoformat(),
                "updated_at": m.updated_at.isoformat(),
                "last_used_at": m.last_used_at.isoformat() if m.last_used_at else None,
                "expires_at": m.expires_at.isoformat() if m.expires_at else None,
            }
            for m in await self._memory.repository.all(user_id)
        ]

    async def erase(self, user_id: int) -> int:
        return await self._memory.delete_all(user_id)


class RemindersSection:
    name = "reminders"

    def __init__(self, repository: UserDataRepository) -> None:
        self._repository = repository

    async def export(self, user_id: int) -> Any:
        return await self._repository.reminders(user_id)

    async def erase(self, user_id: int) -> int:
        return await self._repository.delete_reminders(user_id)


class FilesSection:
    """The user's private files (text, within a small quota): exported whole."""

    name = "files"

    def __init__(self, sandbox: FileSandbox) -> None:
        self._sandbox = sandbox

    async def export(self, user_id: int) -> Any:
        return await asyncio.to_thread(self._read_all, user_id)

    async def erase(self, user_id: int) -> int:
        return await asyncio.to_thread(self._delete_all, user_id)

    def _read_all(self, user_id: int) -> list[dict[str, Any]]:
        root = self._sandbox.user_root(user_id)
        if not root.is_dir():
            return []
        files = []
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # temp files of an interrupted write
            files.append({"path": path.relative_to(root).as_posix(), "content": path.read_text("utf-8", "replace")})
        return files

    def _delete_all(self, user_id: int) -> int:
        root = self._sandbox.user_root(user_id)
        if not root.is_dir():
            return 0
        count = sum(1 for p in root.rglob("*") if p.is_file())
        shutil.rmtree(root)
        return count


def core_sections(repository: UserDataRepository, memory: MemoryService) -> UserData:
    """The sections every Arium has; features add theirs after these."""
    return UserData([ProfileSection(repository), MemorySection(memory), HistorySection(repository)])
