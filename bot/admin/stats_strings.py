"""UI strings of /stats, /users and /health (HTML: every value put into them
is escaped by the renderer)."""

from bot.i18n import add_strings

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_stats": "usage, users, cost, model health and a chart",
        "cmd_users": "list and search users: /users [name, @username or id]",
        "cmd_health": "uptime, version, database size, memory, queues, last error",
        "stats_private_only": "Please send this command in a private chat with me: the answer is for admins only.",
        "stats_title": "<b>Statistics</b> · {time} UTC",
        "stats_users": (
            "<b>Users</b>: {total} · active today {today} · in 7 days {week} · "
            "banned {banned} · blocked the bot {blocked}"
        ),
        "stats_turns": "<b>Messages</b> (turns, failed included): today {today} · 7 days {week} · 30 days {month}",
        "stats_tokens": "<b>Tokens</b>: today {today} · 7 days {week} · 30 days {month}",
        "stats_cost": "<b>Cost estimate</b>: today {today} · 7 days {week} · 30 days {month}",
        "stats_cost_unpriced": "no price set for: {models}",
        "stats_cost_off": "<b>Cost estimate</b>: set MODEL_PRICES to see one",
        "stats_models_header": "<b>Tokens by model, 30 days</b>",
        "stats_model_line": "• {model}: {turns} turns ({failures} failed) · in {tokens_in} · out {tokens_out}{cost}",
        "stats_no_answer": "no model answered",
        "stats_endpoints_header": "<b>Model endpoints</b> (since the start)",
        "stats_endpoint_line": (
            "• {endpoint} [{tier}] {breaker}: {requests} requests · {in_flight} in flight · "
            "p50 {p50} · p95 {p95} · errors: {errors}"
        ),
        "stats_breaker_closed": "✅ closed",
        "stats_breaker_open": "⛔ open",
        "stats_breaker_half_open": "🟡 half-open",
        "stats_tools_header": "<b>Tool calls, 30 days</b>",
        "stats_tool_line": "• {tool}: {calls} calls · {failures} failed · {timeouts} timed out · avg {avg} ms",
        "stats_reminders": "<b>Reminders</b>: {pending} pending ({overdue} overdue) · {paused} paused",
        "stats_none": "• none yet",
        "stats_more": "• … and {count} more",
        "stats_chart_title": "Turns and tokens per day, last 30 days (UTC)",
        "stats_chart_turns": "Turns",
        "stats_chart_tokens": "Tokens",
        "stats_chart_caption": "Turns and tokens per day, last 30 days (UTC)",
        "stats_chart_failed": "The chart could not be drawn this time; the numbers above are complete.",
        "stats_agents_header": "<b>Agents, 30 days</b>",
        "stats_agent_line": (
            "• {agent}: {turns} turns ({failures} failed) · avg {latency} · in {tokens_in} · out {tokens_out} · "
            "{cost} · routed by {reasons} · switched to it {switches}"
        ),
        "stats_agent_reason_mention": "mention",
        "stats_agent_reason_pinned": "pin",
        "stats_agent_reason_rule": "keyword",
        "stats_agent_reason_classifier": "classifier",
        "stats_agent_reason_default": "default",
        "stats_agent_reason_unsure": "unsure",
        "stats_agent_reason_timeout": "router timeout",
        "stats_agent_reason_error": "router error",
        "stats_agents_chart_title": "Agents, last 30 days",
        "stats_agents_chart_turns": "Turns",
        "stats_agents_chart_failed": "Failed",
        "stats_agents_chart_latency": "Mean latency, s",
        "stats_agents_chart_caption": "Turns and mean latency per agent, last 30 days",
        "users_usage": "/users [name, @username or id — up to {limit} characters]",
        "users_header": "<b>Users</b>{search}: {total} · page {page} of {pages}",
        "users_search": " matching “{query}”",
        "users_line": "<code>{id}</code> {name}{username} · {role} · {allowed} · {active} · seen {seen}",
        "users_none": "No users match “{query}”.",
        "users_empty": "No users yet.",
        "users_allowed": "allowed",
        "users_not_allowed": "not allowed",
        "users_active": "active",
        "users_blocked": "blocked the bot",
        "users_role_admin": "admin",
        "users_role_user": "user",
        "users_role_banned": "banned",
        "users_button_stale": "This button is outdated; send /users again.",
        "health_title": "<b>Health</b> · {time} UTC",
        "health_version": "Version {version} · up {uptime}",
        "health_database": "Database: {kind}, {size}",
        "health_memory": "Memory: {size} resident",
        "health_memory_peak": "Memory: {size} at the peak",
        "health_queues": (
            "Queues: background tasks {tasks} · tool calls {tools} of {capacity} · "
            "updates waiting {waiting} · being handled {handling}"
        ),
        "health_last_error": "Last error: {time} UTC, {where}: {summary} ({total} since the start)",
        "health_no_error": "Last error: none since the start",
        "health_recovered": (
            "Cut short by a crash, finished at this start: {total} turns "
            "({answered} answered late, {noted} too old: asked to resend, {failed} no model answered, "
            "{replayed} received but not yet stored, handled now)"
        ),
        "health_models": "Models: {endpoints} endpoints · {states}",
        "health_scaled_worker": "Worker <b>{name}</b> ({leads}) · leader: {leader}",
        "health_scaled_leads": "leads: runs reminders and periodic jobs",
        "health_scaled_follows": "follows",
        "health_scaled_no_leader": "none right now",
        "health_scaled_partitions": "Partitions: {partitions}, {workers} workers consuming; served here lately: {held}",
        "health_scaled_queues": (
            "Broker: {waiting} updates waiting{busiest} · here: {handled} handled, "
            "{duplicates} repeats dropped, {resumed} turns of a dead worker finished"
        ),
        "health_scaled_busiest": " (most in {queue}: {n})",
        "health_embedder_ready": "Memory search: by meaning ({name}) and by words",
        "health_embedder_loading": "Memory search: by words only while the embedding model loads",
        "health_embedder_failed": "Memory search: by words only; the embedding model is unavailable ({reason})",
        "health_mcp": "MCP server {name}: {state}, {tools} tools",
        "health_mcp_error": "MCP server {name}: {state}, {tools} tools; last error: {error}",
        "stats_unknown": "unknown",
        "stats_unit_bytes": "B KB MB GB TB",
        "stats_unit_seconds": "s",
        "stats_unit_duration": "{days}d {hours}h {minutes}m",
    },
    "ru": {
        "cmd_stats": "использование, пользователи, расходы, состояние моделей и график",
        "cmd_users": "список и поиск пользователей: /users [имя, @username или id]",
        "cmd_health": "время работы, версия, размер базы, память, очереди, последняя ошибка",
        "stats_private_only": "Отправьте эту команду мне в личный чат: ответ только для администраторов.",
        "stats_title": "<b>Статистика</b> · {time} UTC",
        "stats_users": (
            "<b>Пользователи</b>: {total} · активны сегодня {today} · за 7 дней {week} · "
            "заблокированы {banned} · заблокировали бота {blocked}"
        ),
        "stats_turns": "<b>Сообщения</b> (ходы, с неудачными): сегодня {today} · 7 дней {week} · 30 дней {month}",
        "stats_tokens": "<b>Токены</b>: сегодня {today} · 7 дней {week} · 30 дней {month}",
        "stats_cost": "<b>Оценка расходов</b>: сегодня {today} · 7 дней {week} · 30 дней {month}",
        "stats_cost_unpriced": "нет цены для: {models}",
        "stats_cost_off": "<b>Оценка расходов</b>: задайте MODEL_PRICES, чтобы её видеть",
        "stats_models_header": "<b>Токены по моделям, 30 дней</b>",
        "stats_model_line": "• {model}: ходов {turns} (неудачных {failures}) · вход {tokens_in} · выход {tokens_out}{cost}",
        "stats_no_answer": "ни одна модель не ответила",
        "stats_endpoints_header": "<b>Точки доступа моделей</b> (с момента запуска)",
        "stats_endpoint_line": (
            "• {endpoint} [{tier}] {breaker}: запросов {requests} · выполняется {in_flight} · "
            "p50 {p50} · p95 {p95} · ошибки: {errors}"
        ),
        "stats_breaker_closed": "✅ закрыт",
        "stats_breaker_open": "⛔ открыт",
        "stats_breaker_half_open": "🟡 полуоткрыт",
        "stats_tools_header": "<b>Вызовы инструментов, 30 дней</b>",
        "stats_tool_line": "• {tool}: вызовов {calls} · неудачных {failures} · по тайм-ауту {timeouts} · в среднем {avg} мс",
        "stats_reminders": "<b>Напоминания</b>: ждут {pending} (просрочено {overdue}) · на паузе {paused}",
        "stats_none": "• пока нет",
        "stats_more": "• … и ещё {count}",
        "stats_chart_title": "Ходы и токены по дням, последние 30 дней (UTC)",
        "stats_chart_turns": "Ходы",
        "stats_chart_tokens": "Токены",
        "stats_chart_caption": "Ходы и токены по дням, последние 30 дней (UTC)",
        "stats_chart_failed": "График сейчас не получилось нарисовать; цифры выше полные.",
        "stats_agents_header": "<b>Агенты, 30 дней</b>",
        "stats_agent_line": (
            "• {agent}: ходов {turns} (неудачных {failures}) · в среднем {latency} · вход {tokens_in} · "
            "выход {tokens_out} · {cost} · выбран: {reasons} · переключений на него {switches}"
        ),
        "stats_agent_reason_mention": "упоминание",
        "stats_agent_reason_pinned": "закреплён",
        "stats_agent_reason_rule": "ключевое слово",
        "stats_agent_reason_classifier": "классификатор",
        "stats_agent_reason_default": "по умолчанию",
        "stats_agent_reason_unsure": "не уверен",
        "stats_agent_reason_timeout": "тайм-аут выбора",
        "stats_agent_reason_error": "ошибка выбора",
        "stats_agents_chart_title": "Агенты, последние 30 дней",
        "stats_agents_chart_turns": "Ходы",
        "stats_agents_chart_failed": "Неудачные",
        "stats_agents_chart_latency": "Средняя задержка, с",
        "stats_agents_chart_caption": "Ходы и средняя задержка по агентам, последние 30 дней",
        "users_usage": "/users [имя, @username или id — до {limit} символов]",
        "users_header": "<b>Пользователи</b>{search}: {total} · страница {page} из {pages}",
        "users_search": " по запросу «{query}»",
        "users_line": "<code>{id}</code> {name}{username} · {role} · {allowed} · {active} · был {seen}",
        "users_none": "Нет пользователей по запросу «{query}».",
        "users_empty": "Пользователей пока нет.",
        "users_allowed": "допущен",
        "users_not_allowed": "не допущен",
        "users_active": "активен",
        "users_blocked": "заблокировал бота",
        "users_role_admin": "админ",
        "users_role_user": "пользователь",
        "users_role_banned": "заблокирован",
        "users_button_stale": "Эта кнопка устарела; отправьте /users ещё раз.",
        "health_title": "<b>Состояние</b> · {time} UTC",
        "health_version": "Версия {version} · работает {uptime}",
        "health_database": "База данных: {kind}, {size}",
        "health_memory": "Память: {size} в RAM",
        "health_memory_peak": "Память: {size} на пике",
        "health_queues": (
            "Очереди: фоновые задачи {tasks} · вызовы инструментов {tools} из {capacity} · "
            "обновления ждут {waiting} · обрабатываются {handling}"
        ),
        "health_last_error": "Последняя ошибка: {time} UTC, {where}: {summary} (всего с запуска {total})",
        "health_no_error": "Последняя ошибка: не было с момента запуска",
        "health_recovered": (
            "Прерваны сбоем и завершены при этом запуске: {total} "
            "(ответ с опозданием: {answered}, слишком старые, попросили повторить: {noted}, модель не ответила: {failed}, "
            "получены, но ещё не сохранены, обработаны сейчас: {replayed})"
        ),
        "health_models": "Модели: точек доступа {endpoints} · {states}",
        "health_scaled_worker": "Воркер <b>{name}</b> ({leads}) · ведущий: {leader}",
        "health_scaled_leads": "ведущий: напоминания и периодические задачи здесь",
        "health_scaled_follows": "ведомый",
        "health_scaled_no_leader": "сейчас нет",
        "health_scaled_partitions": "Разделов: {partitions}, воркеров: {workers}; здесь обслуживались недавно: {held}",
        "health_scaled_queues": (
            "Брокер: ждут {waiting} обновлений{busiest} · здесь: обработано {handled}, "
            "отброшено повторов {duplicates}, завершено ходов упавшего воркера {resumed}"
        ),
        "health_scaled_busiest": " (больше всего в {queue}: {n})",
        "health_embedder_ready": "Поиск в памяти: по смыслу ({name}) и по словам",
        "health_embedder_loading": "Поиск в памяти: только по словам, пока загружается модель эмбеддингов",
        "health_embedder_failed": "Поиск в памяти: только по словам; модель эмбеддингов недоступна ({reason})",
        "health_mcp": "MCP-сервер {name}: {state}, инструментов: {tools}",
        "health_mcp_error": "MCP-сервер {name}: {state}, инструментов: {tools}; последняя ошибка: {error}",
        "stats_unknown": "неизвестно",
        "stats_unit_bytes": "Б КБ МБ ГБ ТБ",
        "stats_unit_seconds": "с",
        "stats_unit_duration": "{days} д {hours} ч {minutes} мин",
    },
}

add_strings(STRINGS)
