"""User-facing strings of reminders and time zones, added to bot.i18n at import."""

from __future__ import annotations

from bot.i18n import add_strings

_EXAMPLES_EN = (
    "/remind call mom tomorrow at 9\n"
    "/remind in 10 minutes check the oven\n"
    "/remind every day at 8:30 take pills\n"
    "/remind every monday 10:00 standup\n"
    "/remind cron 0 9 * * 1-5 stretch"
)
_EXAMPLES_RU = (
    "/remind завтра в 9 позвонить маме\n"
    "/remind через 2 часа позвонить маме\n"
    "/remind каждый день в 8:30 выпить таблетки\n"
    "/remind по понедельникам в 10:00 планёрка\n"
    "/remind cron 0 9 * * 1-5 зарядка"
)

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_remind": "set a reminder: /remind call mom tomorrow at 9",
        "cmd_reminders": "your reminders, with buttons to cancel",
        "cmd_timezone": "show or set your time zone",
        "rem_usage": "Tell me what and when, in one line. For example:\n" + _EXAMPLES_EN
        + "\n\nA day without a time means 09:00. Your time zone: {zone} (/timezone to change).",
        "rem_created": "✅ I'll remind you: {text}\n🕘 {when} ({zone})",
        "rem_created_repeat": "🔁 {rule}",
        "rem_err_empty": "Tell me what and when. For example:\n" + _EXAMPLES_EN,
        "rem_err_empty_text": "What should I remind you of? Write it after the time, e.g. /remind tomorrow at 9 call mom",
        "rem_err_no_time": "I couldn't find when to remind you. Write the time in words, e.g.:\n" + _EXAMPLES_EN,
        "rem_err_past": "{when} ({zone}) has already passed. Pick a later time, e.g. /remind tomorrow at 9 call mom",
        "rem_err_too_far": "{when} ({zone}) is too far ahead; I keep reminders for up to ten years.",
        "rem_err_too_long": "That reminder is too long ({length} characters, limit {limit}). Please shorten it.",
        "rem_err_every_hour": "I repeat reminders daily, weekly, monthly, or by a cron line. Every two hours, for example:\n/remind cron 0 */2 * * * drink water",
        "rem_err_bad_cron": "That cron line doesn't work: {detail}. Example: /remind cron 0 9 * * 1-5 standup",
        "rem_err_out_of_range": "That is further ahead than any calendar I can use; I keep reminders for up to ten years.",
        "rem_err_bad_date": "'{value}' is not a date or time on the calendar, so I set nothing. Try e.g. 'tomorrow at 9' or '2026-12-25 10:00'.",
        "rem_err_bad_recurrence": "I can't repeat '{recurrence}'. Use daily, weekly, monthly, weekdays, 'every monday', or a cron line like 0 9 * * 1-5.",
        "rem_err_unparsed": "I couldn't read '{phrase}' as a time ('{rest}' is unclear). Try e.g. 'tomorrow at 9' or '2026-12-25 10:00'.",
        "rem_err_too_many": "You already have {limit} active reminders, the most I keep. Cancel some in /reminders.",
        "rem_err_not_found": "No reminder with that id among yours.",
        "rem_list_header": "<b>Your reminders</b> ({zone})",
        "rem_list_empty": "You have no reminders. Set one with /remind, e.g. /remind tomorrow at 9 call mom",
        "rem_list_item": "{n}. {text} — {when}",
        "rem_list_paused": "{n}. ⏸ {text} — paused (you had blocked me)",
        "rem_list_more": "…and {count} more.",
        "rem_btn_cancel": "✖ {n}",
        "rem_btn_resume": "▶ Resume paused",
        "rem_cancelled": "Cancelled: {text}",
        "rem_gone": "That reminder is no longer there.",
        "rem_not_yours": "That's someone else's reminder.",
        "rem_resumed": "Resumed {count} reminder(s).",
        "rem_fired": "⏰ {text}",
        "rem_fired_group": "⏰ {name}: {text}",
        "rem_fired_late": "(late: this was due {when} {zone}, while I was offline)",
        "rem_fired_next": "🔁 next: {when}",
        "rem_btn_10m": "+10 min",
        "rem_btn_1h": "+1 hour",
        "rem_btn_tomorrow": "Tomorrow",
        "rem_btn_done": "✅ Done",
        "rem_snoozed": "💤 Snoozed until {when} ({zone})",
        "rem_done": "✅ Done",
        "rem_rule_daily": "every day at {at}",
        "rem_rule_weekly": "every {days} at {at}",
        "rem_rule_weekdays": "every weekday at {at}",
        "rem_rule_monthly": "every month on day {day} at {at}",
        "rem_rule_cron": "cron schedule {cron}",
        "rem_weekday_names": "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
        "tz_current": "Your time zone: {zone} (UTC{offset}); local time {local}.\n"
        "To change it: /timezone Europe/Berlin, a city or country (/timezone Moscow), or share your location with me.",
        "tz_set": "Time zone set to {zone} (UTC{offset}); your local time is {local}.",
        "tz_moved": "Your {count} repeating reminder(s) now follow this zone.",
        "tz_pick": "Which time zone do you mean?",
        "tz_unknown": "I don't know the time zone '{query}'. Examples: /timezone Europe/Berlin, /timezone Moscow, /timezone UTC+3, or share your location.",
        "tz_location": "From your location, your time zone looks like {zone} (local time {local}). Set it?",
    },
    "ru": {
        "cmd_remind": "напоминание: /remind завтра в 9 позвонить маме",
        "cmd_reminders": "ваши напоминания, с кнопками отмены",
        "cmd_timezone": "показать или сменить часовой пояс",
        "rem_usage": "Напишите, что и когда, одной строкой. Например:\n" + _EXAMPLES_RU
        + "\n\nДень без времени — это 09:00. Ваш часовой пояс: {zone} (/timezone — сменить).",
        "rem_created": "✅ Напомню: {text}\n🕘 {when} ({zone})",
        "rem_created_repeat": "🔁 {rule}",
        "rem_err_empty": "Напишите, что и когда. Например:\n" + _EXAMPLES_RU,
        "rem_err_empty_text": "О чём напомнить? Напишите это после времени, например: /remind завтра в 9 позвонить маме",
        "rem_err_no_time": "Не нашёл, когда напомнить. Напишите время словами, например:\n" + _EXAMPLES_RU,
        "rem_err_past": "{when} ({zone}) уже прошло. Выберите время позже, например: /remind завтра в 9 позвонить маме",
        "rem_err_too_far": "{when} ({zone}) — слишком далеко; я храню напоминания до десяти лет вперёд.",
        "rem_err_too_long": "Напоминание слишком длинное ({length} символов, предел {limit}). Сократите его, пожалуйста.",
        "rem_err_every_hour": "Я повторяю напоминания каждый день, неделю, месяц или по строке cron. Например, каждые два часа:\n/remind cron 0 */2 * * * выпить воды",
        "rem_err_bad_cron": "Строка cron не подходит: {detail}. Пример: /remind cron 0 9 * * 1-5 планёрка",
        "rem_err_out_of_range": "Это дальше любого календаря, который я могу вести; я храню напоминания до десяти лет вперёд.",
        "rem_err_bad_date": "«{value}» — такой даты или времени нет в календаре, поэтому я ничего не поставил. Попробуйте, например, «завтра в 9» или «2026-12-25 10:00».",
        "rem_err_bad_recurrence": "Не умею повторять «{recurrence}». Подойдёт: daily, weekly, monthly, weekdays, «каждый понедельник» или строка cron вроде 0 9 * * 1-5.",
        "rem_err_unparsed": "Не понял время «{phrase}» (неясно: «{rest}»). Попробуйте, например, «завтра в 9» или «2026-12-25 10:00».",
        "rem_err_too_many": "У вас уже {limit} активных напоминаний — это мой предел. Отмените лишние в /reminders.",
        "rem_err_not_found": "Среди ваших нет напоминания с таким номером.",
        "rem_list_header": "<b>Ваши напоминания</b> ({zone})",
        "rem_list_empty": "Напоминаний нет. Создайте: /remind завтра в 9 позвонить маме",
        "rem_list_item": "{n}. {text} — {when}",
        "rem_list_paused": "{n}. ⏸ {text} — на паузе (вы меня блокировали)",
        "rem_list_more": "…и ещё {count}.",
        "rem_btn_cancel": "✖ {n}",
        "rem_btn_resume": "▶ Возобновить",
        "rem_cancelled": "Отменено: {text}",
        "rem_gone": "Этого напоминания уже нет.",
        "rem_not_yours": "Это чужое напоминание.",
        "rem_resumed": "Возобновлено напоминаний: {count}.",
        "rem_fired": "⏰ {text}",
        "rem_fired_group": "⏰ {name}: {text}",
        "rem_fired_late": "(с опозданием: должно было сработать {when} {zone}, когда я был недоступен)",
        "rem_fired_next": "🔁 следующее: {when}",
        "rem_btn_10m": "+10 мин",
        "rem_btn_1h": "+1 час",
        "rem_btn_tomorrow": "Завтра",
        "rem_btn_done": "✅ Готово",
        "rem_snoozed": "💤 Отложено до {when} ({zone})",
        "rem_done": "✅ Готово",
        "rem_rule_daily": "каждый день в {at}",
        "rem_rule_weekly": "каждую неделю: {days} в {at}",
        "rem_rule_weekdays": "по будням в {at}",
        "rem_rule_monthly": "каждый месяц, {day} числа в {at}",
        "rem_rule_cron": "по расписанию cron {cron}",
        "rem_weekday_names": "пн,вт,ср,чт,пт,сб,вс",
        "tz_current": "Ваш часовой пояс: {zone} (UTC{offset}); местное время {local}.\n"
        "Сменить: /timezone Europe/Moscow, город или страна (/timezone Москва) — или пришлите мне геопозицию.",
        "tz_set": "Часовой пояс: {zone} (UTC{offset}); у вас сейчас {local}.",
        "tz_moved": "Повторяющиеся напоминания ({count}) теперь идут по этому поясу.",
        "tz_pick": "Какой часовой пояс вы имеете в виду?",
        "tz_unknown": "Не знаю часовой пояс «{query}». Примеры: /timezone Europe/Moscow, /timezone Москва, /timezone UTC+3 — или пришлите геопозицию.",
        "tz_location": "Судя по геопозиции, ваш часовой пояс — {zone} (местное время {local}). Установить?",
    },
}

add_strings(STRINGS)
