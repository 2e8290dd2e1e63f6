"""The tools feature's own user-facing strings (added to bot.i18n at import)."""

from __future__ import annotations

from bot.i18n import add_strings

# Marks a preview as a progress note rather than the start of the answer.
HINT_PREFIX = "⏳ "

TOOLS_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "tools_working": "working on it…",
        "tools_round_limit": (
            "I took too many steps with my tools and stopped. Please ask again, perhaps more specifically."
        ),
    },
    "ru": {
        "tools_working": "работаю над этим…",
        "tools_round_limit": (
            "Я сделал слишком много шагов с инструментами и остановился. Спросите ещё раз, лучше поконкретнее."
        ),
    },
}

add_strings(TOOLS_STRINGS)
