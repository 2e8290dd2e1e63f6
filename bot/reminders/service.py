"""What a user can do with reminders and time zones, independent of any
channel: /remind, /reminders, /timezone, the buttons, and the model's tools
all come through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.context import RequestContext
from bot.i18n import t
from bot.reminders import strings as _strings  # noqa: F401 - registers the string table
from bot.reminders.clock import Clock
from bot.reminders.parsing import MAX_TEXT_CHARS, ReminderInputError, Schedule, format_local, parse_reminder, parse_when
from bot.reminders.recurrence import Rule, localize, zone
from bot.reminders.scheduler import ReminderScheduler, next_firing
from bot.reminders.timezones import describe
from bot.storage.reminders import CANCELLED, ReminderRecord, ReminderRepository, TooManyReminders

SnoozeOption = Literal["10m", "1h", "1d"]
SNOOZE_OPTIONS: tuple[SnoozeOption, ...] = ("10m", "1h", "1d")


@dataclass(frozen=True)
class Outcome:
    """A changed reminder and how to say when it fires next."""

    record: ReminderRecord
    when: str | None  # YYYY-MM-DD HH:MM in the reminder's zone
    zone: str


def describe_rule(rule: Rule, language: str) -> str:
    at = rule.at.strftime("%H:%M") if rule.at else ""
    if rule.kind == "daily":
        return t("rem_rule_daily", language, at=at)
    if rule.kind == "weekly":
        if rule.weekdays == (0, 1, 2, 3, 4):
            return t("rem_rule_weekdays", language, at=at)
        names = t("rem_weekday_names", language).split(",")
        return t("rem_rule_weekly", language, days=", ".join(names[d] for d in rule.weekdays), at=at)
    if rule.kind == "monthly":
        return t("rem_rule_monthly", language, day=rule.day, at=at)
    return t("rem_rule_cron", language, cron=rule.cron)


def rule_of(record: ReminderRecord) -> Rule | None:
    return Rule.decode(record.rule) if record.rule else None


def _first_firing(record: ReminderRecord, schedule: Schedule) -> datetime:
    """When a just-made reminder fires: its schedule's first time. A reminder
    found by its tool call's key was made before a crash, so a relative
    "in 10 minutes" parsed again would be later: its stored time is the one
    the first call announced (or, if it fired meanwhile, when it did)."""
    return record.next_fire_at or record.last_fired_at or schedule.first


class ReminderService:
    def __init__(
        self,
        repo: ReminderRepository,
        scheduler: ReminderScheduler,
        clock: Clock,
        *,
        max_per_user: int = 500,
    ) -> None:
        self._repo = repo
        self._scheduler = scheduler
        self._clock = clock
        self._max_per_user = max_per_user

    def now(self) -> datetime:
        return self._clock.now()

    # --- creating -----------------------------------------------------------------

    async def remind(self, ctx: RequestContext, request: str) -> Outcome:
        """/remind's argument, parsed without a model. Raises ReminderInputError."""
        parsed = parse_reminder(request, ctx.timezone, self.now())
        # One request (a Telegram update, an API call) makes one reminder: a
        # /remind handled again at the next start (the crash came before its
        # update was marked done) finds the one it made.
        return await self._create(ctx, parsed.text, parsed.schedule, key=f"req:{ctx.request_id}")

    async def create(self, ctx: RequestContext, text: str, when: str, recurrence: str | None = None) -> Outcome:
        """The model's create_reminder: ``when`` goes through the /remind grammar (or ISO 8601)."""
        text = (text or "").strip()
        if not text:
            raise ReminderInputError("empty_text")
        if len(text) > MAX_TEXT_CHARS:
            raise ReminderInputError("too_long", length=len(text), limit=MAX_TEXT_CHARS)
        schedule = parse_when(when, ctx.timezone, self.now(), recurrence)
        return await self._create(ctx, text, schedule, key=ctx.tool_call_key)

    async def _create(self, ctx: RequestContext, text: str, schedule: Schedule, *, key: str | None) -> Outcome:
        # The key (the tool call's, or /remind's request) makes the same
        # request re-run after a crash get the reminder it made, not a second one.
        try:
            record = await self._repo.add(
                user_id=ctx.user_id, chat_id=ctx.chat_id, text=text, timezone=ctx.timezone,
                rule=schedule.rule.encode() if schedule.rule else None, first=schedule.first,
                now=self.now(), max_active=self._max_per_user, idempotency_key=key,
            )
        except TooManyReminders:
            raise ReminderInputError("too_many", limit=self._max_per_user) from None
        # Arming is keyed by the reminder's id: arming a found one again replaces its timer.
        self._scheduler.track(record)
        return Outcome(record, format_local(_first_firing(record, schedule), record.timezone), record.timezone)

    # --- reading and changing ------------------------------------------------------

    async def listed(self, ctx: RequestContext) -> list[ReminderRecord]:
        """In a private chat all of the user's reminders; in a group only those set there."""
        return await self._repo.listed(ctx.user_id, None if ctx.is_private else ctx.chat_id)

    async def cancel(self, user_id: int, reminder_id: int) -> ReminderRecord | None:
        record = await self._repo.cancel(reminder_id, user_id, self.now())
        if record is not None:
            self._scheduler.untrack(record.id)
        return record

    async def cancelled_before(self, user_id: int, reminder_id: int) -> ReminderRecord | None:
        """The user's reminder if it is already cancelled (else None)."""
        record = await self._repo.get(reminder_id)
        return record if record is not None and record.user_id == user_id and record.status == CANCELLED else None

    async def owner_of(self, reminder_id: int) -> int | None:
        record = await self._repo.get(reminder_id)
        return record.user_id if record else None

    async def snooze(self, user_id: int, reminder_id: int, option: SnoozeOption) -> Outcome | None:
        """Fire again later. A repeating reminder gets a one-off copy, so its
        series keeps its own times."""
        original = await self._repo.get(reminder_id)
        if original is None or original.user_id != user_id:
            return None
        until = self._snooze_until(original, option)
        if original.rule is None:
            record = await self._repo.reschedule(reminder_id, user_id, until, self.now())
        else:
            try:
                record = await self._repo.add(
                    user_id=user_id, chat_id=original.chat_id, text=original.text, timezone=original.timezone,
                    rule=None, first=until, now=self.now(), max_active=self._max_per_user,
                )
            except TooManyReminders:
                raise ReminderInputError("too_many", limit=self._max_per_user) from None
        if record is None:
            return None
        self._scheduler.track(record)
        return Outcome(record, format_local(until, record.timezone), record.timezone)

    def _snooze_until(self, record: ReminderRecord, option: SnoozeOption) -> datetime:
        now = self.now()
        if option == "10m":
            return now + timedelta(minutes=10)
        if option == "1h":
            return now + timedelta(hours=1)
        # Tomorrow at the time it was due (on the wall clock), or this time tomorrow.
        tz = zone(record.timezone)
        base = record.last_fired_at if record.last_fired_at else now
        at = base.astimezone(tz).time().replace(second=0, microsecond=0, tzinfo=None)
        until = localize(datetime.combine(now.astimezone(tz).date() + timedelta(days=1), at), tz)
        return until if until > now else now + timedelta(days=1)

    async def done(self, user_id: int, reminder_id: int) -> ReminderRecord | None:
        return await self._repo.mark_done(reminder_id, user_id, self.now())

    async def resume(self, ctx: RequestContext) -> int:
        records = await self._repo.resume_paused(ctx.user_id, None if ctx.is_private else ctx.chat_id, self.now())
        for record in records:
            self._scheduler.track(record)
        return len(records)

    # --- time zones --------------------------------------------------------------

    async def set_timezone(self, ctx: RequestContext, zone_name: str) -> tuple[int, str, str]:
        """Set the user's zone; repeating reminders follow it (09:00 stays 09:00
        on the new wall clock); one-off ones keep their moment. Returns
        (repeating reminders moved, local time, UTC offset)."""
        zone(zone_name)  # raises for an unknown name; callers pass validated names
        now = self.now()
        moved: dict[int, datetime] = {}
        for record in await self._repo.listed(ctx.user_id):
            if record.rule and record.timezone != zone_name:
                moved_record = ReminderRecord(**{**record.__dict__, "timezone": zone_name})
                next_at = next_firing(moved_record, now)
                if next_at is not None:
                    moved[record.id] = next_at
        changed = await self._repo.set_user_timezone(ctx.user_id, zone_name, moved, now)
        for record in changed:
            self._scheduler.track(record)
        local, offset = describe(zone_name, now)
        return len(changed), local, offset

    def when_of(self, record: ReminderRecord, zone: str | None = None) -> str:
        """The next firing in ``zone`` (default: the reminder's own)."""
        return format_local(record.next_fire_at, zone or record.timezone) if record.next_fire_at else "-"
