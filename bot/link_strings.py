"""User-facing strings of /link (bot/linking.py), added to the shared table
at import; bot/commands.py imports them for /help's line."""

from __future__ import annotations

from bot.i18n import add_strings

add_strings(
    {
        "en": {
            "cmd_link": "use me from another channel too: /link shows a code, /link CODE enters one",
            "link_code": (
                "Your link code: {code}\n"
                "Enter /link {code} in the other channel (Telegram, the console, or the API's /v1/link) "
                "within {minutes} minutes. Your memories and reminders will then be shared there. "
                "Anyone with this code can join your account, so keep it to yourself."
            ),
            "link_done": (
                "Linked. From now on both places share your memories and reminders "
                "(memories moved: {memories}, reminders moved: {reminders})."
            ),
            "link_private_only": "Link codes are personal: use /link in a private chat with me.",
            "link_err_malformed": "That doesn't look like a link code. /link alone shows one; /link CODE enters it.",
            "link_err_unknown": "That code is unknown, used or expired. Show a new one with /link in the other channel.",
            "link_err_same_user": "This code is yours, and this place is already yours: nothing to link.",
            "link_err_both_in": (
                "Both accounts already have {channel}: one person cannot have two there, so I did not join them."
            ),
            "link_channel_telegram": "a Telegram account",
            "link_channel_console": "a console",
            "link_channel_api": "an API account",
        },
        "ru": {
            "cmd_link": "пользоваться мной и из другого канала: /link покажет код, /link КОД — ввести код",
            "link_code": (
                "Ваш код привязки: {code}\n"
                "Введите /link {code} в другом канале (Telegram, консоль или /v1/link в API) "
                "в течение {minutes} минут. После этого ваши воспоминания и напоминания будут общими. "
                "Любой, у кого есть этот код, может присоединиться к вашему аккаунту — не передавайте его."
            ),
            "link_done": (
                "Готово. Теперь в обоих местах общие воспоминания и напоминания "
                "(перенесено воспоминаний: {memories}, напоминаний: {reminders})."
            ),
            "link_private_only": "Код привязки — личное: используйте /link в личном чате со мной.",
            "link_err_malformed": "Это не похоже на код привязки. /link покажет код, /link КОД — введёт его.",
            "link_err_unknown": "Код неизвестен, уже использован или истёк. Получите новый командой /link в другом канале.",
            "link_err_same_user": "Это ваш собственный код, и здесь уже ваш аккаунт — связывать нечего.",
            "link_err_both_in": (
                "У обоих аккаунтов уже есть {channel}: у одного человека не может быть двух, поэтому я их не объединил."
            ),
            "link_channel_telegram": "аккаунт Telegram",
            "link_channel_console": "консоль",
            "link_channel_api": "аккаунт API",
        },
    }
)
