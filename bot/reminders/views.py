"""What the reminder commands say, written once for every channel: /remind,
the /reminders list, /timezone, and a fired reminder. Plain text; a channel
that renders markup escapes it (Telegram) and adds its own buttons."""

from __future__ import annotations

from dataclasses import dataclass

from bot.context import RequestContext
from bot.i18n import t
from bot.identity import TELEGRAM
from bot.reminders.notifier import DueReminder
from bot.reminders.parsing import ReminderInputError, format_local
from bot.reminders.service import Outcome, ReminderService, describe_rule, rule_of
from bot.reminders.timezones import describe, lookup_zone
from bot.storage.reminders import ReminderRecord

LIST_LIMIT = 30


def explain(error: ReminderInputError, language: str) -> str:
    return t(f"rem_err_{error.code}", language, **error.values)


def created_text(outcome: Outcome, language: str) -> str:
    text = t("rem_created", language, text=outcome.record.text, when=outcome.when, zone=outcome.zone)
    rule = rule_of(outcome.record)
    if rule:
        text += "\n" + t("rem_created_repeat", language, rule=describe_rule(rule, language))
    return text


async def remind(service: ReminderService, ctx: RequestContext, request: str) -> str:
    """/remind <request>: the usage, why the request was not understood, or
    the confirmation with the time in the user's zone."""
    if not request.strip():
        return t("rem_usage", ctx.language, zone=ctx.timezone)
    try:
        outcome = await service.remind(ctx, request)
    except ReminderInputError as exc:
        return explain(exc, ctx.language)
    return created_text(outcome, ctx.language)


@dataclass(frozen=True)
class ReminderList:
    records: list[ReminderRecord]  # the ones shown, numbered from 1
    header: str | None  # None: the list is empty and ``lines`` says so
    lines: list[str]

    @property
    def has_paused(self) -> bool:
        return any(r.status == "paused" for r in self.records)


async def reminder_list(service: ReminderService, ctx: RequestContext) -> ReminderList:
    records = await service.listed(ctx)
    if not records:
        return ReminderList([], None, [t("rem_list_empty", ctx.language)])
    shown = records[:LIST_LIMIT]
    lines = [
        list_line(service, number, record, ctx.language, ctx.timezone) for number, record in enumerate(shown, start=1)
    ]
    if len(records) > LIST_LIMIT:
        lines.append(t("rem_list_more", ctx.language, count=len(records) - LIST_LIMIT))
    return ReminderList(shown, t("rem_list_header", ctx.language, zone=ctx.timezone), lines)


def list_line(service: ReminderService, number: int, record: ReminderRecord, language: str, zone: str) -> str:
    """One reminder of the list, its time in ``zone``: the list's header names
    the user's zone, and a one-off set before a /timezone keeps its moment
    (and its old zone in the record)."""
    text = record.text if len(record.text) <= 80 else record.text[:79] + "…"
    if record.status == "paused":
        return t("rem_list_paused", language, n=number, text=text)
    line = t("rem_list_item", language, n=number, text=text, when=service.when_of(record, zone))
    rule = rule_of(record)
    return f"{line} (🔁 {describe_rule(rule, language)})" if rule else line


def current_zone_text(service: ReminderService, ctx: RequestContext) -> str:
    local, offset = describe(ctx.timezone, service.now())
    return t("tz_current", ctx.language, zone=ctx.timezone, offset=offset, local=local)


async def set_zone(service: ReminderService, ctx: RequestContext, zone_name: str) -> str:
    moved, local, offset = await service.set_timezone(ctx, zone_name)
    text = t("tz_set", ctx.language, zone=zone_name, offset=offset, local=local)
    return f"{text}\n{t('tz_moved', ctx.language, count=moved)}" if moved else text


async def timezone_without_choices(service: ReminderService, ctx: RequestContext, query: str) -> str:
    """/timezone for a channel without buttons: show, set an exact match, or
    list the suggestions as names to type."""
    query = query.strip()[:100]
    if not query:
        return current_zone_text(service, ctx)
    found = lookup_zone(query)
    if found.exact:
        return await set_zone(service, ctx, found.exact)
    if found.suggestions:
        return t("tz_pick", ctx.language) + "\n" + "\n".join(f"/timezone {zone}" for zone in found.suggestions)
    return t("tz_unknown", ctx.language, query=query)


def fired_text(reminder: DueReminder) -> str:
    language = reminder.language
    if reminder.channel == TELEGRAM and reminder.chat_id < 0:  # groups: say whose reminder it is
        head = t("rem_fired_group", language, name=reminder.user_name, text=reminder.text)
    else:
        head = t("rem_fired", language, text=reminder.text)
    lines = [head]
    if reminder.late:
        lines.append(t("rem_fired_late", language, when=format_local(reminder.due_at, reminder.timezone), zone=reminder.timezone))
    if reminder.rule is not None and reminder.next_at is not None:
        lines.append(t("rem_fired_next", language, when=format_local(reminder.next_at, reminder.timezone)))
    return "\n\n".join(lines)
