"""The evaluation results page: who may open it (an admin's API key, or the
signed link /eval sends in Telegram), and what it shows, in a real headless
browser (Debian's chromium driven by Playwright) against the bot's real HTTP
server. Runs are written straight through EvalRepository, as `eval run` (a
separate process) writes them."""

from __future__ import annotations

import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.app import Arium
from bot.channels.api.eval_pages import SESSION_COOKIE
from bot.eval.links import SECRET_FILE, SESSION_TTL, EvalLinks, Purpose
from bot.settings import Settings
from bot.storage.evals import CheckOutcome, EvalRepository, TaskOutcome
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_server import FakeTelegram
from tests.support.api import key_for

ADMIN, USER = 4242, 5151
CHROMIUM = "/usr/bin/chromium"
# Without these, chromium on a machine without network keeps trying to reach
# Google's services (updates, sync, QUIC probes) and floods the logs.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
INJECTED = '<script>window.pwned = true</script><img src=x onerror="window.pwned = true">'

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing: scripts/install.sh --dev installs Debian's chromium for the browser tests",
)


def outcome(task_id: str, category: str, variant: str, passed: bool, **extra: Any) -> TaskOutcome:
    checks = (CheckOutcome(f'contains: "{task_id}"', passed, "" if passed else "not in the answer"),)
    values: dict[str, Any] = {
        "checks": checks, "transcript": ((f"say {task_id}", f"{task_id}!" if passed else "no"),),
        "total_ms": 800, "first_token_ms": 120, "tokens_in": 100, "tokens_out": 20, "cost": 0.0001,
        "model": "openai:gpt-4o-mini",
    } | extra
    return TaskOutcome(task_id, category, variant, passed, **values)


# Run "ab": greet passes in both variants, remind fails in B, xss fails in A
# (its transcript carries markup that must show as text). Run "base": A only,
# so against "ab" remind flips to pass and xss to fail.
AB_RESULTS = [
    outcome("greet", "chat", "A", True),
    outcome("greet", "chat", "B", True),
    outcome("remind", "reminders", "A", True, tools=("create_reminder",)),
    outcome("remind", "reminders", "B", False),
    outcome("xss", "safety", "A", False, transcript=((INJECTED, f"You said {INJECTED}"),), error="checks failed"),
    outcome("xss", "safety", "B", True),
]
BASE_RESULTS = [
    outcome("greet", "chat", "A", True),
    outcome("remind", "reminders", "A", False),
    outcome("xss", "safety", "A", True),
]


async def store_run(
    app: Arium, run_id: str, results: list[TaskOutcome], *, variants: dict[str, str], finished: bool = True,
    tasks_total: int | None = None,
) -> EvalRepository:
    runs = EvalRepository(app.db)
    total = tasks_total if tasks_total is not None else len(results)
    await runs.start_run(run_id, "smoke", f"name of {run_id}", variants, total, concurrency=2)
    for result in results:
        await runs.add_result(run_id, result)
    if finished:
        await runs.finish_run(run_id)
    return runs


class Site:
    def __init__(self, app: Arium) -> None:
        assert app.api is not None
        self.app = app
        self.root = f"http://127.0.0.1:{app.api.port}"

    def link(self, path: str = "/eval") -> str:
        return self.app.eval_links.page_link(self.root, path)

    async def get(
        self, path: str, *, key: str | None = None, cookies: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=self.root, timeout=30, cookies=cookies) as client:
            return await client.get(path, headers=headers, **kwargs)


@pytest.fixture
async def site(start_bot: BotFactory) -> Site:
    app = await start_bot(api_enabled=True, api_port=0, bot_admin_ids=str(ADMIN))
    await store_run(app, "base", BASE_RESULTS, variants={"A": "openai:gpt-4o-mini"})
    await store_run(app, "ab", AB_RESULTS, variants={"A": "openai:gpt-4o-mini", "B": "mistral:small <b>bold</b>"})
    return Site(app)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


# --- who may look (HTTP, no browser) --------------------------------------------------------


async def test_without_credentials_every_page_is_a_401_page(site: Site) -> None:
    for path in ("/eval", "/eval/runs/ab", "/eval/runs/ab/events", "/eval/compare?base=base&run=ab"):
        response = await site.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"].startswith("text/html")
        assert "/eval" in response.text and "Traceback" not in response.text
        assert "greet" not in response.text, "nothing of the runs leaks"


async def test_an_admin_key_opens_the_page_and_anyone_else_s_key_finds_nothing(site: Site) -> None:
    admin_key = await key_for(site.app, ADMIN, "admin-laptop")
    user_key = await key_for(site.app, USER, "user-laptop")
    listed = await site.get("/eval", key=admin_key)
    assert listed.status_code == 200
    assert 'data-run="ab"' in listed.text and 'data-run="base"' in listed.text
    assert "mistral:small &lt;b&gt;bold&lt;/b&gt;" in listed.text, "variant descriptions are escaped"
    for path in ("/eval", "/eval/runs/ab", "/eval/runs/ab/events"):
        refused = await site.get(path, key=user_key)
        assert refused.status_code == 404 and "greet" not in refused.text, path
    assert (await site.get("/eval", key="ak-not-a-key")).status_code == 401
    assert (await site.get("/eval/runs/nope", key=admin_key)).status_code == 404


async def test_transcripts_are_escaped_and_no_inline_code_but_the_page_s_own_may_run(site: Site) -> None:
    admin_key = await key_for(site.app, ADMIN, "admin-laptop")
    page = await site.get("/eval/runs/ab", key=admin_key)
    assert page.status_code == 200
    assert "&lt;script&gt;window.pwned = true&lt;/script&gt;" in page.text
    assert "<script>window.pwned" not in page.text and "<img src=x" not in page.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None and page.text.count("<script") == 1
    assert f'<script nonce="{nonce.group(1)}">' in page.text


async def test_a_signed_link_opens_a_session_and_expired_or_tampered_links_do_not(site: Site) -> None:
    links = site.app.eval_links
    opened = await site.get(site.link())
    assert opened.status_code == 200 and 'data-run="ab"' in opened.text
    cookie = opened.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
        "SameSite=Strict", "SameSite=strict"
    )
    assert "Path=/eval" in cookie and f"Max-Age={SESSION_TTL}" in cookie
    session = opened.cookies[SESSION_COOKIE]
    by_cookie = await site.get("/eval/runs/ab", cookies={SESSION_COOKIE: session})
    assert by_cookie.status_code == 200 and "greet" in by_cookie.text

    token = token_of(site.link())
    expiry, _, signature = token.partition(".")
    expired = links.sign(Purpose.LINK, 1)  # 1970
    forged_signature = f"{expiry}.{signature[:-1]}{'0' if signature[-1] != '0' else '1'}"
    extended = f"{int(expiry) + 3600}.{signature}"
    a_session_as_a_link = links.issue(Purpose.SESSION, 60)
    other_secret = EvalLinks(site.app.settings.bot_data_dir / "elsewhere").issue(Purpose.LINK, 60)
    for bad in (expired, forged_signature, extended, a_session_as_a_link, other_secret, "garbage", ""):
        refused = await site.get("/eval", params={"token": bad})
        assert refused.status_code == 401, bad
        assert "expired" in refused.text and "set-cookie" not in refused.headers
    for bad_cookie in (expired, token, f"{int(expiry) + 99999}.{signature}"):
        assert (await site.get("/eval", cookies={SESSION_COOKIE: bad_cookie})).status_code == 401


async def test_the_secret_is_made_on_first_use_readable_by_the_owner_only(site: Site) -> None:
    secret = site.app.settings.bot_data_dir.resolve() / SECRET_FILE
    site.link()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert EvalLinks(secret.parent).valid(Purpose.LINK, token_of(site.link())), "another process agrees"


async def test_the_event_stream_of_a_finished_run_sends_its_results_and_ends(site: Site) -> None:
    admin_key = await key_for(site.app, ADMIN, "admin-laptop")
    async with httpx.AsyncClient(base_url=site.root, timeout=30) as client:
        async with client.stream(
            "GET", "/eval/runs/ab/events", headers={"Authorization": f"Bearer {admin_key}"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            body = "".join([chunk async for chunk in stream.aiter_text()])
    events = re.findall(r"^event: (\w+)$", body, flags=re.M)
    assert events == ["result"] * 6 + ["progress", "end"]
    assert '"done": 6' in body and '"passed": 4' in body


async def test_compare_needs_two_known_runs_with_the_variants_asked(site: Site) -> None:
    admin_key = await key_for(site.app, ADMIN, "admin-laptop")
    assert (await site.get("/eval/compare", key=admin_key)).status_code == 400
    assert (await site.get("/eval/compare?base=base&run=nope", key=admin_key)).status_code == 404
    no_b = await site.get("/eval/compare?base=base&run=ab&base_variant=B", key=admin_key)
    assert no_b.status_code == 400 and "variant B" in no_b.text
    ab = await site.get("/eval/compare?base=ab&run=ab&base_variant=A&run_variant=B", key=admin_key)
    assert ab.status_code == 200 and 'class="flipped broke" data-task="remind"' in ab.text


# --- /eval in Telegram -----------------------------------------------------------------------


async def test_eval_in_telegram_sends_admins_a_working_link(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(api_enabled=True, api_port=0, bot_admin_ids=str(ADMIN))
    tg.user_text("/eval", chat_id=ADMIN)
    tg.user_text("/eval", chat_id=USER)
    tg.user_text("/eval", chat_id=-100777, user_id=ADMIN, chat_type="group")
    [sent] = await tg.wait_messages(ADMIN, 1)
    [unknown] = await tg.wait_messages(USER, 1)
    [in_group] = await tg.wait_messages(-100777, 1)
    link = re.search(r"http://\S+", sent.text)
    assert link is not None and link.group(0).startswith(app.settings.api_public_root + "/eval?token=")
    assert "/eval" in unknown.text and "token" not in unknown.text
    assert "private" in in_group.text and "token" not in in_group.text
    site = Site(app)
    assert (await site.get(urlsplit(link.group(0))._replace(scheme="", netloc="").geturl())).status_code == 200


async def test_eval_in_telegram_says_when_the_api_is_off(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(bot_admin_ids=str(ADMIN))
    tg.user_text("/eval", chat_id=ADMIN)
    [sent] = await tg.wait_messages(ADMIN, 1)
    assert "API_ENABLED" in sent.text and "token" not in sent.text


def test_the_public_url_defaults_to_where_the_api_listens() -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert settings().api_public_root == "http://127.0.0.1:8080"
    assert settings(api_host="0.0.0.0", api_port=9000).api_public_root == "http://127.0.0.1:9000"
    assert settings(api_host="::1").api_public_root == "http://[::1]:8080"
    assert settings(api_public_url="https://bot.example.com/arium/").api_public_root == "https://bot.example.com/arium"
    with pytest.raises(ValueError, match="API_PUBLIC_URL"):
        settings(api_public_url="bot.example.com")


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@needs_chromium
async def test_browse_runs_open_one_see_its_chart_and_transcript_and_compare(site: Site, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page()
    await page.goto(site.link())
    await expect(page).not_to_have_url(re.compile("token="))  # the one-time token leaves the address bar
    await expect(page.locator('tr[data-run="ab"]')).to_be_visible()
    await expect(page.locator('tr[data-run="ab"]')).to_contain_text("B 67% (2/3)")

    await page.get_by_role("link", name="ab", exact=True).click()
    await expect(page.locator("h1")).to_contain_text("Run ab")
    chart = page.locator("svg#category-chart")
    await expect(chart).to_be_visible()
    await expect(chart.locator("rect.bar")).to_have_count(6)  # 3 categories x 2 variants
    await expect(chart.locator('rect.bar[data-variant="A"]').first).to_be_visible()
    await expect(page.locator('tr[data-variant="B"]')).to_contain_text("67%")

    task = page.locator('details[data-task="xss"][data-variant="A"]')
    transcript = task.locator(".transcript")
    await expect(transcript).to_be_hidden()
    await task.locator("summary").click()
    await expect(transcript).to_be_visible()
    await expect(transcript).to_contain_text("<script>window.pwned = true</script>")
    await expect(task.locator(".checks")).to_contain_text("not in the answer")
    assert await page.evaluate("window.pwned === undefined"), "the transcript's markup did not run"

    await page.get_by_role("link", name="All runs").click()
    await page.locator('select[name="base"]').select_option("base")
    await page.locator('select[name="run"]').select_option("ab")
    await page.get_by_role("button", name="Compare").click()
    await expect(page.locator("h1")).to_have_text("Comparison")
    await expect(page.locator('tr.flipped.fixed[data-task="remind"]')).to_be_visible()
    await expect(page.locator('tr.flipped.broke[data-task="xss"]')).to_contain_text("pass → fail")
    await expect(page.locator('tr[data-task="greet"]')).not_to_have_class(re.compile("flipped"))
    await expect(page.locator("table.metrics")).to_contain_text("Success rate")


@needs_chromium
async def test_a_running_run_updates_live_and_shows_the_final_page_when_it_ends(site: Site, browser: Any) -> None:
    from playwright.async_api import expect

    variants = {"A": "openai:gpt-4o-mini", "B": "mistral:small"}
    runs = await store_run(site.app, "live", AB_RESULTS[:1], variants=variants, finished=False, tasks_total=4)
    page = await browser.new_page()
    await page.goto(site.link("/eval/runs/live"))
    progress = page.locator("#progress-bar")
    await expect(page.locator("#progress-text")).to_have_text("1 / 4 done, 1 passed")
    await expect(page.locator("#live-rows tr")).to_have_count(1)

    await runs.add_result("live", AB_RESULTS[1])  # greet B: passed
    await runs.add_result("live", AB_RESULTS[3])  # remind B: failed
    await expect(page.locator("#live-rows tr")).to_have_count(3)
    await expect(page.locator("#progress-text")).to_have_text("3 / 4 done, 2 passed")
    await expect(progress).to_have_js_property("value", 3)
    await expect(page.locator('#live-rows tr[data-key="remind/B"]')).to_have_class("fail")

    await runs.add_result("live", AB_RESULTS[2])
    await runs.finish_run("live")
    # The stream ends with the run and the page reloads into the final view.
    await expect(page.locator("#live")).to_have_count(0)
    await expect(page.locator(".status")).to_have_text("finished")
    await expect(page.locator("details.task")).to_have_count(4)
    await expect(page.locator("svg#category-chart rect.bar")).to_have_count(4)
