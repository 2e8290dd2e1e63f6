"""UI strings of /eval (the link to the evaluation results page), added to
the shared table at import."""

from __future__ import annotations

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_eval": "a link to the evaluation results page",
        "evalpage_link": (
            "📊 Evaluation results (the link opens the page for {minutes} minutes; do not share it):\n{url}"
        ),
        "evalpage_no_api": (
            "The results page is served by the HTTP API, which is off. Set API_ENABLED=true "
            "(and API_PUBLIC_URL if browsers reach it through a proxy), restart, and send /eval again."
        ),
        "evalpage_private_only": "Ask for the link in your private chat with me: a link shown in a group is a link given away.",
    },
    "ru": {
        "cmd_eval": "ссылка на страницу результатов оценки",
        "evalpage_link": (
            "📊 Результаты оценки (ссылка открывает страницу в течение {minutes} минут; никому её не пересылайте):\n{url}"
        ),
        "evalpage_no_api": (
            "Страницу результатов показывает HTTP API, а он выключен. Задайте API_ENABLED=true "
            "(и API_PUBLIC_URL, если браузер заходит через прокси), перезапустите бота и пришлите /eval ещё раз."
        ),
        "evalpage_private_only": "Попросите ссылку в личном чате со мной: ссылка, показанная в группе, — отданная ссылка.",
    },
}

add_strings(STRINGS)
