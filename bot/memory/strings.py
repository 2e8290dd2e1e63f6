"""User-facing strings of the memory commands (/memory, /forget, /export,
/deleteme), added to the shared table at import."""

from __future__ import annotations

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_memory": "what I remember about you",
        "cmd_forget": "forget something: /forget <words> or /forget all",
        "cmd_export": "download your data as a file",
        "cmd_deleteme": "erase everything I know about you",
        "mem_private_only": "Memory is personal: use {command} in a private chat with me.",
        "mem_empty": "I don't remember anything about you yet. Tell me about yourself, or ask me to remember something.",
        "mem_page_header": "What I remember about you ({total}), page {page} of {pages}:",
        "mem_page_footer": "Tap 🗑 and a number to delete that memory.",
        "mem_deleted": "Forgotten.",
        "mem_already_gone": "That memory is already gone.",
        "mem_forget_usage": (
            "Tell me what to forget: /forget <words>, for example /forget Berlin.\n"
            "/forget all deletes everything I remember about you (after you confirm)."
        ),
        "mem_forget_none": "Nothing I remember matches \u201c{query}\u201d, so nothing was deleted.",
        "mem_forget_confirm": "Forget these {count}?",
        "mem_forget_more": "(the {shown} closest matches are shown; run /forget again for the rest)",
        "mem_forget_done": "Forgotten: {count}.",
        "mem_forget_all_confirm": "Forget all {count} things I remember about you? This cannot be undone.",
        "mem_forget_all_done": "Done: I forgot everything I remembered about you ({count}).",
        "mem_yes_forget": "Yes, forget",
        "mem_no": "No, keep",
        "mem_cancelled": "Cancelled. Nothing was deleted.",
        "mem_button_stale": "This button is no longer valid. Run the command again.",
        "mem_export_caption": "Your data: profile, memories and history, as JSON.",
        "mem_export_failed": "Sorry, I couldn't prepare your export. Please try again later.",
        "mem_deleteme_confirm": (
            "Erase everything I know about you: your profile, everything I remember, our chat history, "
            "your reminders, your files and your API keys? "
            "This cannot be undone. (/export first if you want a copy.)"
        ),
        "mem_yes_erase": "Yes, erase everything",
        "mem_deleteme_done": (
            "Done: everything I stored about you is erased ({details}). "
            "If you write to me again, I'll start from scratch."
        ),
        "mem_failed": "Sorry, that didn't work. Nothing was changed; please try again.",
        "mem_erase_details": "{memories} memories, {messages} messages",
    },
    "ru": {
        "cmd_memory": "что я о вас помню",
        "cmd_forget": "забыть: /forget <слова> или /forget all",
        "cmd_export": "скачать ваши данные файлом",
        "cmd_deleteme": "стереть всё, что я о вас знаю",
        "mem_private_only": "Память личная: используйте {command} в личном чате со мной.",
        "mem_empty": "Я пока ничего о вас не помню. Расскажите о себе или попросите что-нибудь запомнить.",
        "mem_page_header": "Что я о вас помню ({total}), страница {page} из {pages}:",
        "mem_page_footer": "Нажмите 🗑 с номером, чтобы удалить запись.",
        "mem_deleted": "Забыл.",
        "mem_already_gone": "Этой записи уже нет.",
        "mem_forget_usage": (
            "Напишите, что забыть: /forget <слова>, например /forget Берлин.\n"
            "/forget all удалит всё, что я о вас помню (после подтверждения)."
        ),
        "mem_forget_none": "Ничего похожего на «{query}» я не помню, ничего не удалено.",
        "mem_forget_confirm": "Забыть это ({count})?",
        "mem_forget_more": "(показаны {shown} самых близких; для остальных снова вызовите /forget)",
        "mem_forget_done": "Забыл: {count}.",
        "mem_forget_all_confirm": "Забыть всё, что я о вас помню ({count})? Это нельзя отменить.",
        "mem_forget_all_done": "Готово: я забыл всё, что помнил о вас ({count}).",
        "mem_yes_forget": "Да, забыть",
        "mem_no": "Нет, оставить",
        "mem_cancelled": "Отменено. Ничего не удалено.",
        "mem_button_stale": "Эта кнопка больше не действует. Вызовите команду ещё раз.",
        "mem_export_caption": "Ваши данные: профиль, память и история, в формате JSON.",
        "mem_export_failed": "Не получилось подготовить выгрузку. Попробуйте позже.",
        "mem_deleteme_confirm": (
            "Стереть всё, что я о вас знаю: профиль, всё, что я помню, историю переписки, "
            "напоминания, файлы и API-ключи? "
            "Это нельзя отменить. (Сначала /export, если нужна копия.)"
        ),
        "mem_yes_erase": "Да, стереть всё",
        "mem_deleteme_done": (
            "Готово: всё, что я хранил о вас, стёрто ({details}). "
            "Если напишете снова, начнём с чистого листа."
        ),
        "mem_failed": "Не получилось. Ничего не изменено, попробуйте ещё раз.",
        "mem_erase_details": "записей памяти: {memories}, сообщений: {messages}",
    },
}

add_strings(STRINGS)
