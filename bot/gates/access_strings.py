"""UI strings of access control, limits and the audit view (English, Russian)."""

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_allow": "let a user in (allow-list mode): /allow <user id or @username>",
        "cmd_disallow": "take a user off the allow list: /disallow <user id or @username>",
        "cmd_invite": "create a one-time invite link: /invite [hours valid]",
        "cmd_ban": "ban a user at once: /ban <user id or @username>",
        "cmd_unban": "lift a ban: /unban <user id or @username>",
        "cmd_budget": "show or set a user's daily token budget: /budget <user> [tokens|default|unlimited]",
        "cmd_audit": "the latest admin actions: /audit [how many]",
        # Said to users at the gates.
        "access_stranger": (
            "Hi! This is a private assistant for invited people only.\n"
            "If you know its owner, ask them for an invite link, or send them your Telegram id: {user_id}"
        ),
        "access_invite_welcome": "Your invite worked — welcome!",
        "access_invite_used": "This invite link has already been used. Please ask for a new one.",
        "access_invite_expired": "This invite link has expired. Please ask for a new one.",
        "access_invite_unknown": "I don't recognise this invite link. Please check it or ask for a new one.",
        "access_you_are_in": "Good news: you can use this bot now. Just write to me.",
        "limit_slow_down": "That's a lot of messages at once — please slow down and try again in {seconds} s.",
        "limit_budget_used": (
            "You've used today's limit of {limit} tokens. It resets at {when} ({zone}). See you then!"
        ),
        # Said to admins.
        "access_allowed": "{user} can use the bot now.",
        "access_already_allowed": "{user} already had access.",
        "access_open_note": (
            "Note: the access mode is open (BOT_ACCESS_MODE), so everyone can use the bot now; "
            "this admission counts once the mode is allowlist."
        ),
        "access_disallowed": "{user} is no longer on the allow list.",
        "access_not_allowed": "{user} was not on the allow list.",
        "access_admin_always": "{user} is an admin (BOT_ADMIN_IDS) and always has access.",
        "access_banned": "{user} is banned. Their next message will not reach the model.",
        "access_already_banned": "{user} was already banned.",
        "access_cannot_ban_admin": (
            "{user} is an admin (BOT_ADMIN_IDS), and admins can't be banned. "
            "Remove the id from BOT_ADMIN_IDS first."
        ),
        "access_unbanned": "{user} is no longer banned.",
        "access_not_banned": "{user} was not banned.",
        "access_unknown_username": (
            "I haven't seen @{username} yet: I learn a username when its owner first writes to me. "
            "Ask them to write to the bot (in allow-list mode they get their id to send you), "
            "use their numeric id, or send them an invite link (/invite)."
        ),
        "access_unknown_id": "I have no user with id {user_id}: they have never written to the bot.",
        "access_invite_created": "A one-time invite link (send it to one person):\n{link}\n\n{validity}",
        "access_invite_until": "Valid until {when} ({zone}).",
        "access_invite_forever": "It does not expire.",
        "budget_shown": "{user}: daily budget {limit} ({source}); used today (UTC): {used}.",
        "budget_set": "{user}: daily budget set to {limit}.",
        "budget_source_default": "the default",
        "budget_source_own": "set for this user",
        "budget_source_admin": "admins are exempt",
        "budget_unlimited": "unlimited",
        "budget_tokens": "{count} tokens",
        "audit_empty": "The audit log is empty.",
        "audit_header": "<b>Latest admin actions</b> (newest first, {zone}):",
    },
    "ru": {
        "cmd_allow": "впустить пользователя (режим списка): /allow <id или @имя>",
        "cmd_disallow": "убрать пользователя из списка допущенных: /disallow <id или @имя>",
        "cmd_invite": "создать одноразовую ссылку-приглашение: /invite [часов действия]",
        "cmd_ban": "сразу заблокировать пользователя: /ban <id или @имя>",
        "cmd_unban": "снять блокировку: /unban <id или @имя>",
        "cmd_budget": "показать или задать дневной лимит токенов: /budget <пользователь> [токены|default|unlimited]",
        "cmd_audit": "последние действия админов: /audit [сколько]",
        "access_stranger": (
            "Здравствуйте! Это личный ассистент, только для приглашённых.\n"
            "Если вы знаете владельца, попросите у него ссылку-приглашение или отправьте ему ваш id в Telegram: {user_id}"
        ),
        "access_invite_welcome": "Приглашение сработало — добро пожаловать!",
        "access_invite_used": "Эта ссылка-приглашение уже использована. Попросите новую.",
        "access_invite_expired": "Срок действия этой ссылки-приглашения истёк. Попросите новую.",
        "access_invite_unknown": "Я не узнаю эту ссылку-приглашение. Проверьте её или попросите новую.",
        "access_you_are_in": "Хорошие новости: теперь вы можете пользоваться ботом. Просто напишите мне.",
        "limit_slow_down": "Слишком много сообщений сразу — пожалуйста, помедленнее. Попробуйте снова через {seconds} с.",
        "limit_budget_used": (
            "Дневной лимит в {limit} токенов исчерпан. Он обновится {when} ({zone}). До встречи!"
        ),
        "access_allowed": "{user} теперь может пользоваться ботом.",
        "access_already_allowed": "{user} уже имел доступ.",
        "access_open_note": (
            "Заметьте: режим доступа открытый (BOT_ACCESS_MODE), ботом сейчас может пользоваться каждый; "
            "допуск начнёт действовать в режиме allowlist."
        ),
        "access_disallowed": "{user} больше не в списке допущенных.",
        "access_not_allowed": "{user} и не был в списке допущенных.",
        "access_admin_always": "{user} — админ (BOT_ADMIN_IDS), у него всегда есть доступ.",
        "access_banned": "{user} заблокирован. Его следующее сообщение не дойдёт до модели.",
        "access_already_banned": "{user} уже был заблокирован.",
        "access_cannot_ban_admin": (
            "{user} — админ (BOT_ADMIN_IDS), админов заблокировать нельзя. "
            "Сначала уберите id из BOT_ADMIN_IDS."
        ),
        "access_unbanned": "{user} разблокирован.",
        "access_not_banned": "{user} и не был заблокирован.",
        "access_unknown_username": (
            "Я ещё не встречал @{username}: имя становится мне известно, когда его владелец впервые мне пишет. "
            "Попросите его написать боту (в режиме списка он получит свой id, чтобы переслать вам), "
            "укажите числовой id или отправьте ему приглашение (/invite)."
        ),
        "access_unknown_id": "Пользователя с id {user_id} нет: он ни разу не писал боту.",
        "access_invite_created": "Одноразовая ссылка-приглашение (отправьте её одному человеку):\n{link}\n\n{validity}",
        "access_invite_until": "Действует до {when} ({zone}).",
        "access_invite_forever": "Срок действия не ограничен.",
        "budget_shown": "{user}: дневной лимит {limit} ({source}); израсходовано сегодня (UTC): {used}.",
        "budget_set": "{user}: дневной лимит теперь {limit}.",
        "budget_source_default": "по умолчанию",
        "budget_source_own": "задан для пользователя",
        "budget_source_admin": "на админов не действует",
        "budget_unlimited": "без ограничений",
        "budget_tokens": "{count} токенов",
        "audit_empty": "Журнал действий пуст.",
        "audit_header": "<b>Последние действия админов</b> (сначала новые, {zone}):",
    },
}

add_strings(STRINGS)
