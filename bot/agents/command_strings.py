"""UI strings of /agents and /agent (English and Russian), added to bot.i18n
at import. Answers are Telegram HTML with <b> only, so bot.i18n.plain makes
them console text; the cmd_* lines are plain (the menu shows them as is)."""

from __future__ import annotations

from bot.i18n import add_strings

AGENT_COMMAND_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "cmd_agents": "agents: multi-agent mode on or off, and what each agent may do",
        "cmd_agent": "choose the agent that answers in this chat",
        # /agents (admins)
        "agents_usage": "/agents, /agents on, /agents off",
        "agents_none_configured": (
            "No agents are configured. Define them as [agents.NAME] tables (description, instructions, "
            "tools, models) in the TOML file named by BOT_CONFIG, then restart the bot."
        ),
        "agents_header": "<b>Agents</b> — multi-agent mode is <b>{state}</b>",
        "agents_state_on": "on",
        "agents_state_off": "off",
        "agents_default_mark": "(default)",
        "agents_tier": "model tier: {tier}",
        "agents_tools": "tools: {tools}",
        "agents_tools_all": "all",
        "agents_tools_none": "none",
        "agents_keywords": "keywords: {keywords}",
        "agents_orchestrator": "orchestrator",
        "agents_more": "… and {n} more",
        "agents_help": "/agents on · /agents off switches multi-agent mode.",
        "agents_switched_on": "Multi-agent mode is on: each message goes to the agent that fits it best.",
        "agents_switched_off": "Multi-agent mode is off: the default assistant answers every message.",
        "agents_already_on": "Multi-agent mode is already on.",
        "agents_already_off": "Multi-agent mode is already off.",
        "agents_not_saved": "Multi-agent mode was not switched: the database did not answer. Please try again.",
        # /agent (everyone)
        "agent_none": "There are no agents in this bot.",
        "agent_usage": "Usage: /agent lists the agents, /agent NAME pins one to this chat, /agent auto lets me choose.",
        "agent_header": "<b>Agents</b> (multi-agent mode is {state})",
        "agent_pinned_mark": "📌 pinned here",
        "agent_auto_note": "No agent is pinned here: I choose one for each message.",
        "agent_off_note": (
            "Multi-agent mode is off, so the default assistant answers every message until an admin runs /agents on."
        ),
        "agent_help": "/agent NAME pins an agent to this chat; /agent auto lets me choose again.",
        "agent_unknown": "There is no agent named {name}. Agents: {names}.",
        "agent_group_admins_only": "In a group, only the bot's admins can choose the agent. /agent lists them.",
        "agent_pinned": "Pinned {name} to this chat: it answers every message here until /agent auto.",
        "agent_pinned_mode_off": (
            "Pinned {name} to this chat. Multi-agent mode is off, though, so the default assistant answers "
            "until an admin runs /agents on."
        ),
        "agent_unpinned": "Back to automatic: I choose the agent for each message in this chat.",
        "agent_unpinned_mode_off": (
            "No agent is pinned in this chat now. Multi-agent mode is off, so the default assistant answers "
            "until an admin runs /agents on."
        ),
        "agent_not_saved": "That was not saved: the database did not answer. Please try again.",
    },
    "ru": {
        "cmd_agents": "агенты: включить или выключить многоагентный режим, что может каждый агент",
        "cmd_agent": "выбрать агента, который отвечает в этом чате",
        # /agents (admins)
        "agents_usage": "/agents, /agents on, /agents off",
        "agents_none_configured": (
            "Агенты не настроены. Опишите их таблицами [agents.NAME] (description, instructions, tools, models) "
            "в TOML-файле, указанном в BOT_CONFIG, и перезапустите бота."
        ),
        "agents_header": "<b>Агенты</b> — многоагентный режим <b>{state}</b>",
        "agents_state_on": "включён",
        "agents_state_off": "выключен",
        "agents_default_mark": "(по умолчанию)",
        "agents_tier": "уровень моделей: {tier}",
        "agents_tools": "инструменты: {tools}",
        "agents_tools_all": "все",
        "agents_tools_none": "нет",
        "agents_keywords": "ключевые слова: {keywords}",
        "agents_orchestrator": "оркестратор",
        "agents_more": "… и ещё {n}",
        "agents_help": "/agents on · /agents off — включить или выключить многоагентный режим.",
        "agents_switched_on": "Многоагентный режим включён: каждое сообщение получает самый подходящий агент.",
        "agents_switched_off": "Многоагентный режим выключен: на все сообщения отвечает основной ассистент.",
        "agents_already_on": "Многоагентный режим уже включён.",
        "agents_already_off": "Многоагентный режим уже выключен.",
        "agents_not_saved": "Режим не переключён: база данных не ответила. Попробуйте ещё раз.",
        # /agent (everyone)
        "agent_none": "В этом боте нет агентов.",
        "agent_usage": (
            "Как пользоваться: /agent — список агентов, /agent ИМЯ — закрепить агента за этим чатом, "
            "/agent auto — пусть выбираю я."
        ),
        "agent_header": "<b>Агенты</b> (многоагентный режим {state})",
        "agent_pinned_mark": "📌 закреплён здесь",
        "agent_auto_note": "Здесь никто не закреплён: я выбираю агента для каждого сообщения.",
        "agent_off_note": (
            "Многоагентный режим выключен, поэтому на все сообщения отвечает основной ассистент, "
            "пока администратор не выполнит /agents on."
        ),
        "agent_help": "/agent ИМЯ закрепляет агента за этим чатом; /agent auto — снова выбираю я.",
        "agent_unknown": "Агента с именем {name} нет. Агенты: {names}.",
        "agent_group_admins_only": "В группе выбирать агента могут только администраторы бота. Список — /agent.",
        "agent_pinned": "{name} закреплён за этим чатом и отвечает на все сообщения здесь до /agent auto.",
        "agent_pinned_mode_off": (
            "{name} закреплён за этим чатом. Но многоагентный режим выключен, поэтому отвечает основной "
            "ассистент, пока администратор не выполнит /agents on."
        ),
        "agent_unpinned": "Снова автоматически: я выбираю агента для каждого сообщения в этом чате.",
        "agent_unpinned_mode_off": (
            "Теперь за этим чатом никто не закреплён. Многоагентный режим выключен, поэтому отвечает основной "
            "ассистент, пока администратор не выполнит /agents on."
        ),
        "agent_not_saved": "Не сохранено: база данных не ответила. Попробуйте ещё раз.",
    },
}

add_strings(AGENT_COMMAND_STRINGS)
