"""UI strings of /broadcast (the admin's side; the broadcast text itself is
sent as the admin wrote it)."""

from __future__ import annotations

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_broadcast": "send a message to every active user (after you confirm)",
        "bc_usage": "/broadcast <text> (formatting, links and line breaks are kept)",
        "bc_private_only": "Use /broadcast in a private chat with me, so the text is not shown here first.",
        "bc_too_long": (
            "That text is too long for one Telegram message: {length} characters, the limit is {limit}. "
            "Shorten it or send two broadcasts."
        ),
        "bc_nobody": "There is nobody to send it to yet: no active users. Nothing was sent.",
        "bc_preview_failed": "Telegram refused this text ({reason}). Nothing was sent.",
        "bc_confirm": "⬆️ This is exactly what users will get. Send it to {count} active users?",
        "bc_btn_send": "✅ Send to {count}",
        "bc_btn_cancel": "✖️ Cancel",
        "bc_btn_stop": "⛔ Stop sending",
        "bc_starting": "Sending to {count} users…",
        "bc_draft_cancelled": "Cancelled. Nothing was sent.",
        "bc_stopping": "Stopping…",
        "bc_stale": "This button is no longer valid.",
        "bc_expired": "This preview has expired. Send /broadcast again.",
        "bc_already_running": "This broadcast is already being sent.",
        "bc_already_done": "This broadcast has already been sent.",
        "bc_already_cancelled": "This broadcast was cancelled.",
        "bc_progress_sending": "📣 Broadcast #{id}: sending…",
        "bc_progress_paused": "⏸ Broadcast #{id} paused: the bot is restarting. It continues when the bot is back.",
        "bc_progress_done": "✅ Broadcast #{id} finished in {elapsed}.",
        "bc_progress_cancelled": "⛔ Broadcast #{id} cancelled; {left} users did not get it.",
        "bc_progress_counts": "Sent {sent} of {total} · blocked the bot {blocked} · failed {failed}",
        "bc_progress_rate": "{rate} msg/s · about {eta} left",
        "bc_progress_measuring": "measuring the rate…",
        "bc_duration_min": "{minutes} min {seconds} s",
        "bc_duration_s": "{seconds} s",
    },
    "ru": {
        "cmd_broadcast": "разослать сообщение всем активным пользователям (после подтверждения)",
        "bc_usage": "/broadcast <текст> (форматирование, ссылки и переносы строк сохранятся)",
        "bc_private_only": "Используйте /broadcast в личном чате со мной, чтобы текст не показался здесь раньше времени.",
        "bc_too_long": (
            "Текст слишком длинный для одного сообщения Telegram: {length} символов, предел {limit}. "
            "Сократите его или сделайте две рассылки."
        ),
        "bc_nobody": "Пока некому отправлять: активных пользователей нет. Ничего не отправлено.",
        "bc_preview_failed": "Telegram не принял этот текст ({reason}). Ничего не отправлено.",
        "bc_confirm": "⬆️ Именно так сообщение увидят пользователи. Отправить его {count} активным пользователям?",
        "bc_btn_send": "✅ Отправить {count}",
        "bc_btn_cancel": "✖️ Отмена",
        "bc_btn_stop": "⛔ Остановить",
        "bc_starting": "Отправляю {count} пользователям…",
        "bc_draft_cancelled": "Отменено. Ничего не отправлено.",
        "bc_stopping": "Останавливаю…",
        "bc_stale": "Эта кнопка больше не действует.",
        "bc_expired": "Срок предпросмотра истёк. Отправьте /broadcast ещё раз.",
        "bc_already_running": "Эта рассылка уже идёт.",
        "bc_already_done": "Эта рассылка уже отправлена.",
        "bc_already_cancelled": "Эта рассылка отменена.",
        "bc_progress_sending": "📣 Рассылка №{id}: отправляю…",
        "bc_progress_paused": "⏸ Рассылка №{id} на паузе: бот перезапускается. Она продолжится, когда бот вернётся.",
        "bc_progress_done": "✅ Рассылка №{id} завершена за {elapsed}.",
        "bc_progress_cancelled": "⛔ Рассылка №{id} отменена; не получили: {left}.",
        "bc_progress_counts": "Отправлено {sent} из {total} · заблокировали бота {blocked} · ошибки {failed}",
        "bc_progress_rate": "{rate} сообщ./с · осталось около {eta}",
        "bc_progress_measuring": "измеряю скорость…",
        "bc_duration_min": "{minutes} мин {seconds} с",
        "bc_duration_s": "{seconds} с",
    },
}

add_strings(STRINGS)
