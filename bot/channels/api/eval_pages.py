"""The evaluation results page on the API's HTTP server: ``/eval`` (the
runs), ``/eval/runs/{id}`` (one run), ``/eval/runs/{id}/events`` (a running
run's progress as server-sent events) and ``/eval/compare`` (two runs side
by side). HTML comes from bot/eval/pages.py; this module decides who may
see it and streams the progress.

Admins only, two ways in:
- an admin's API key as ``Authorization: Bearer`` (a valid key of anyone
  else gets 404, as the API answers for what is not the caller's);
- a signed link from ``/eval`` in Telegram (``?token=``, bot/eval/links.py),
  which also sets a signed session cookie, so the page's own links and its
  event stream work without the token.
Anything else is a 401 page. Runs are written by ``python -m bot eval run``,
usually another process, so everything here is read from the database."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from bot.errors import ConfigError
from bot.eval.compare import compare
from bot.eval.links import SESSION_TTL, EvalLinks, Purpose
from bot.eval.pages import Page, compare_page, problem_page, run_page, runs_page
from bot.storage.api_keys import ApiKeyRepository
from bot.storage.eval_views import EvalPageQueries, RunProgress
from bot.storage.evals import EvalRepository
from bot.storage.identities import IdentityRepository

log = logging.getLogger(__name__)

SESSION_COOKIE = "arium_eval_session"
RUNS_LISTED = 100


@dataclass(frozen=True)
class EvalPageServices:
    runs: EvalRepository
    queries: EvalPageQueries
    links: EvalLinks
    keys: ApiKeyRepository
    is_admin: Callable[[int], Awaitable[bool]]  # an Arium user id -> may see the page
    prefix: str = ""  # the path under which a browser sees the server (from API_PUBLIC_URL)
    secure_cookie: bool = False  # the page is reached over HTTPS: the cookie says Secure
    poll_interval: float = 1.0  # seconds between looks at a running run
    # A stream ends after this long and the browser's EventSource reconnects
    # where it left off (Last-Event-ID), so no connection lives forever.
    stream_lifetime: float = 600.0


class AdminIds:
    """Whether an API key's user is an admin: BOT_ADMIN_IDS names Telegram
    ids, and a key belongs to an Arium user, who is that Telegram user or
    was linked to them (/link)."""

    def __init__(self, admin_ids: frozenset[int], identities: IdentityRepository) -> None:
        self._admin_ids = admin_ids
        self._identities = identities

    async def __call__(self, user_id: int) -> bool:
        if user_id in self._admin_ids:
            return True
        telegram_id = (await self._identities.channels_of(user_id)).get("telegram", "")
        return telegram_id.lstrip("-").isdigit() and int(telegram_id) in self._admin_ids


@dataclass(frozen=True)
class Admitted:
    """An admin's request; ``new_session`` is a session token to hand the
    browser (the request came with a link token)."""

    new_session: str | None = None


def eval_router(services: EvalPageServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/eval")
    async def runs(request: Request) -> Response:
        admitted = await _admit(request, services)
        if isinstance(admitted, Response):
            return admitted
        listed = await services.runs.runs(RUNS_LISTED)
        counts = await services.queries.pass_counts([run.id for run in listed])
        return _page(services, admitted, lambda page: runs_page(page, listed, counts))

    @router.get("/eval/runs/{run_id}")
    async def run(request: Request, run_id: str) -> Response:
        admitted = await _admit(request, services)
        if isinstance(admitted, Response):
            return admitted
        # The newest row before the run itself: a result stored in between is
        # both on the page and in the stream (the script drops the repeat)
        # instead of in neither.
        newest_row = await services.queries.last_row(run_id)
        record = await services.runs.run(run_id)
        if record is None:
            return _problem(services, 404, "Not found", f"There is no evaluation run {run_id!r}.")
        return _page(services, admitted, lambda page: run_page(page, record, newest_row))

    @router.get("/eval/runs/{run_id}/events")
    async def run_events(request: Request, run_id: str) -> Response:
        admitted = await _admit(request, services)
        if isinstance(admitted, Response):
            return admitted
        after_row = _resume_row(request)
        first = await services.queries.progress(run_id, after_row)
        if first is None:
            return _problem(services, 404, "Not found", f"There is no evaluation run {run_id!r}.")
        return StreamingResponse(
            _progress_events(request, services, run_id, first, after_row),
            media_type="text/event-stream",
            # no-transform and X-Accel-Buffering: a proxy must pass events on as they come.
            headers={"Cache-Control": "no-store, no-transform", "X-Accel-Buffering": "no"},
        )

    @router.get("/eval/compare")
    async def compare_runs(
        request: Request, base: str = "", run: str = "", base_variant: str = "A", run_variant: str = "A"
    ) -> Response:
        admitted = await _admit(request, services)
        if isinstance(admitted, Response):
            return admitted
        if not base or not run:
            return _problem(services, 400, "Nothing to compare", "Pick two runs: /eval/compare?base=ID&run=ID.")
        base_record, run_record = await services.runs.run(base), await services.runs.run(run)
        if base_record is None or run_record is None:
            unknown = base if base_record is None else run
            return _problem(services, 404, "Not found", f"There is no evaluation run {unknown!r}.")
        try:
            comparison = compare(base_record, run_record, base_variant=base_variant, run_variant=run_variant)
        except ConfigError as problem:
            return _problem(services, 400, "Cannot compare", str(problem))
        variants = (base_variant, run_variant)
        return _page(services, admitted, lambda page: compare_page(page, base_record, run_record, comparison, variants))

    return router


# --- who may look ------------------------------------------------------------------------------


async def _admit(request: Request, services: EvalPageServices) -> Admitted | Response:
    """An admin by key, link token or session cookie; else the refusal to send."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        return await _admit_key(authorization, services)
    token = request.query_params.get("token")
    if token is not None:
        if not services.links.valid(Purpose.LINK, token):
            return _problem(
                services, 401, "Link expired",
                "This link has expired or is not valid. Send /eval to the bot in Telegram for a new one.",
            )
        return Admitted(new_session=services.links.issue(Purpose.SESSION, SESSION_TTL))
    if services.links.valid(Purpose.SESSION, request.cookies.get(SESSION_COOKIE)):
        return Admitted()
    return _problem(
        services, 401, "Sign in",
        "The evaluation results are for admins: open the link that /eval sends in Telegram, "
        "or send an admin's API key as 'Authorization: Bearer <key>'.",
    )


async def _admit_key(authorization: str, services: EvalPageServices) -> Admitted | Response:
    scheme, _, key = authorization.partition(" ")
    user_id = await services.keys.user_of(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
    if user_id is None:
        return _problem(services, 401, "Sign in", "The API key is not valid (unknown or revoked).")
    if not await services.is_admin(user_id):
        # As the API answers for what is not the caller's: the page's existence is not revealed.
        return _problem(services, 404, "Not found", "There is nothing here.")
    return Admitted()


# --- responses ----------------------------------------------------------------------------------


def _page(services: EvalPageServices, admitted: Admitted, render: Callable[[Page], str]) -> Response:
    page = Page(nonce=secrets.token_urlsafe(16), prefix=services.prefix)
    response = HTMLResponse(render(page), headers=_headers(page.nonce))
    if admitted.new_session is not None:
        response.set_cookie(
            SESSION_COOKIE, admitted.new_session, max_age=SESSION_TTL, path=f"{services.prefix}/eval",
            httponly=True, samesite="strict", secure=services.secure_cookie,
        )
    return response


def _problem(services: EvalPageServices, status: int, title: str, message: str) -> Response:
    page = Page(nonce=secrets.token_urlsafe(16), prefix=services.prefix)
    return HTMLResponse(problem_page(page, title, message), status_code=status, headers=_headers(page.nonce))


def _headers(nonce: str) -> dict[str, str]:
    # Only this response's own script runs and nothing loads from elsewhere:
    # a transcript that slipped past escaping still could not execute.
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


# --- live progress -----------------------------------------------------------------------------------


def _resume_row(request: Request) -> int:
    """Where the stream starts: after the row a reconnecting browser last
    got (Last-Event-ID), else after the newest row its page showed."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value and value.isdigit() and len(value) <= 18:
            return int(value)
    return 0


async def _progress_events(
    request: Request, services: EvalPageServices, run_id: str, progress: RunProgress, after_row: int
) -> AsyncIterator[str]:
    """Each new result and the counts, once a poll, until the run is no
    longer running (then ``end``), the client leaves, the server stops, or
    the stream's lifetime is up (the browser then reconnects)."""
    loop = asyncio.get_running_loop()
    closes_at = loop.time() + services.stream_lifetime
    yield "retry: 2000\n\n"
    while True:
        for result in progress.new_results:
            after_row = result.row_id
            yield _event("result", {
                "task_id": result.task_id, "category": result.category, "variant": result.variant,
                "passed": result.passed, "total_ms": result.total_ms, "error": result.error,
            }, event_id=result.row_id)
        yield _event("progress", _counts(progress))
        if progress.status != "running":
            yield _event("end", {"status": progress.status})
            return
        if getattr(request.app.state, "stopping", False) or loop.time() >= closes_at:
            return
        await asyncio.sleep(services.poll_interval)
        polled = await services.queries.progress(run_id, after_row)
        if polled is None:  # deleted while watched
            yield _event("end", {"status": "deleted"})
            return
        progress = polled


def _counts(progress: RunProgress) -> dict[str, Any]:
    return {
        "status": progress.status,
        "total": progress.tasks_total,
        "done": sum(count.done for count in progress.counts.values()),
        "passed": sum(count.passed for count in progress.counts.values()),
        "variants": {v: {"done": c.done, "passed": c.passed} for v, c in sorted(progress.counts.items())},
    }


def _event(name: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
