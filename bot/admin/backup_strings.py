"""UI strings of /backup, added to the shared table at import."""

from __future__ import annotations

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_backup": "back up the database, memory indexes and user files now",
        "backup_done": "✅ Backup written in {duration} s:\n{path}\n{contents}\nSize: {size}. Backups kept: {kept}.",
        "backup_part_database": "• database: {size} ({users} users, {messages} messages, {memories} memories)",
        "backup_part_indexes": "• memory index files: {count}",
        "backup_part_files": "• user files: {count}",
        "backup_postgres": (
            "⚠️ The database is PostgreSQL, so it is not in this backup: back it up with pg_dump "
            "(see README, Operations)."
        ),
        "backup_busy": "A backup is already running; try again when it has finished.",
        "backup_failed": "❌ The backup failed: {reason}",
    },
    "ru": {
        "cmd_backup": "резервная копия базы, индексов памяти и файлов пользователей",
        "backup_done": "✅ Резервная копия готова за {duration} с:\n{path}\n{contents}\nРазмер: {size}. Хранится копий: {kept}.",
        "backup_part_database": "• база данных: {size} (пользователей {users}, сообщений {messages}, воспоминаний {memories})",
        "backup_part_indexes": "• файлы индексов памяти: {count}",
        "backup_part_files": "• файлы пользователей: {count}",
        "backup_postgres": (
            "⚠️ База данных — PostgreSQL, её в этой копии нет: сохраняйте её через pg_dump "
            "(см. README, раздел Operations)."
        ),
        "backup_busy": "Резервное копирование уже идёт; попробуйте, когда оно закончится.",
        "backup_failed": "❌ Резервная копия не получилась: {reason}",
    },
}

add_strings(STRINGS)
