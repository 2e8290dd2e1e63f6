"""The agents feature's progress lines (added to bot.i18n at import)."""

from __future__ import annotations

from bot.i18n import add_strings

AGENT_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "agents_step": "step {n} of {total} · {agent}: {task}",
        "agents_delegating": "asking {agent}…",
    },
    "ru": {
        "agents_step": "шаг {n} из {total} · {agent}: {task}",
        "agents_delegating": "спрашиваю {agent}…",
    },
}

add_strings(AGENT_STRINGS)
