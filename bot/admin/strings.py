"""UI strings shared by the admin commands."""

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "admin_usage": "Usage: {usage}",
        "admin_failed": "That did not work: {reason}",
    },
    "ru": {
        "admin_usage": "Как пользоваться: {usage}",
        "admin_failed": "Не получилось: {reason}",
    },
}

add_strings(STRINGS)
