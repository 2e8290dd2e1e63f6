"""Roles and who has them. Admins come from BOT_ADMIN_IDS; bans live in the
database, so they take effect without a restart."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    BANNED = "banned"


class AuthProvider:
    """Decides a user's effective role from configuration and the stored role."""

    def __init__(self, admin_ids: frozenset[int]) -> None:
        self._admin_ids = admin_ids

    def effective_role(self, user_id: int, stored_role: str | None) -> Role:
        # Configuration is authoritative for admins: removing an id from
        # BOT_ADMIN_IDS demotes that user at the next message.
        if user_id in self._admin_ids:
            return Role.ADMIN
        if stored_role == Role.BANNED:
            return Role.BANNED
        return Role.USER

    def is_admin(self, user_id: int) -> bool:
        return user_id in self._admin_ids
