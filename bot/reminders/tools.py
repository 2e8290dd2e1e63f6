"""Reminder tools for the model: plain typed async functions taking the
RequestContext first, registered as tools by the tool registry. Authorization
comes from the context (the user's own reminders only), never from arguments.

Results are small JSON-ready dicts; bad input raises ReminderInputError,
whose English message the tool executor returns to the model."""

from __future__ import annotations

from typing import Any

from bot.context import RequestContext
from bot.i18n import t
from bot.reminders.parsing import ReminderInputError
from bot.errors import ToolError
from bot.reminders.service import ReminderService, describe_rule, rule_of
from bot.storage.models import MAX_ROW_ID


def explain(error: ReminderInputError, language: str = "en") -> str:
    """The user-facing sentence for a parse error (English for the model)."""
    return t(f"rem_err_{error.code}", language, **error.values)


class ToolInputError(ToolError):
    """What the model did wrong, in words it can act on (shown to it as the result)."""


class ReminderTools:
    """Bound to one ReminderService; each public coroutine is one tool."""

    def __init__(self, service: ReminderService) -> None:
        self._service = service

    async def create_reminder(
        self, ctx: RequestContext, text: str, when: str, recurrence: str | None = None
    ) -> dict[str, Any]:
        """Create a reminder for the user. Returns its id and first firing as
        "YYYY-MM-DD HH:MM" in the user's time zone; tell the user that time and zone.

        Args:
            text: what to remind them of, in their words ("call mom").
            when: when it first fires, in the user's own time zone: ISO 8601 ("2026-12-25T10:00"; an explicit offset is respected) or a phrase in English or Russian such as "tomorrow at 9", "in 10 minutes", "friday 18:00", "через 2 часа", "every day at 8:30".
            recurrence: empty for a one-off reminder; otherwise "daily", "weekly", "monthly", "weekdays", "weekends", a phrase such as "every monday and thursday", or a 5-field cron line ("0 9 * * 1-5", 0 = Sunday). The time of day comes from `when`.
        """
        # ctx.tool_call_key goes with the row: the same call re-run after a
        # crash answers with the reminder it made (same id, same time).
        try:
            outcome = await self._service.create(ctx, text, when, recurrence)
        except ReminderInputError as exc:
            raise ToolInputError(explain(exc)) from None
        rule = rule_of(outcome.record)
        return {
            "id": outcome.record.id,
            "text": outcome.record.text,
            "fires_at": outcome.when,
            "timezone": outcome.zone,
            "repeats": describe_rule(rule, "en") if rule else None,
        }

    async def list_reminders(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """List the user's active reminders, soonest first: id, text, next
        firing ("YYYY-MM-DD HH:MM" in the reminder's time zone), how it
        repeats, and whether it is paused (the user had blocked the bot)."""
        result = []
        for record in await self._service.listed(ctx):
            rule = rule_of(record)
            result.append({
                "id": record.id,
                "text": record.text,
                "next": self._service.when_of(record),
                "timezone": record.timezone,
                "repeats": describe_rule(rule, "en") if rule else None,
                "paused": record.status == "paused",
            })
        return result

    async def cancel_reminder(self, ctx: RequestContext, id: int) -> dict[str, Any]:  # noqa: A002 - the tool's documented argument name
        """Cancel one of the user's reminders; a repeating one stops for good.

        Args:
            id: the reminder's id, as list_reminders gave it.
        """
        # Cancelling is idempotent without a key: a call re-run after a crash
        # (or a second "cancel it") finds the reminder already cancelled and
        # says so the same way, instead of "no such reminder".
        reminder_id = int(id)
        record = None
        if 1 <= reminder_id <= MAX_ROW_ID:  # past it nothing matches, and the driver refuses the number
            record = await self._service.cancel(ctx.user_id, reminder_id) or await self._service.cancelled_before(
                ctx.user_id, reminder_id
            )
        if record is None:
            raise ToolInputError(f"no active reminder with id {id} belongs to this user; call list_reminders")
        return {"id": record.id, "text": record.text, "cancelled": True}
