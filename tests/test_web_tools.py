"""read_url and web_search against real HTTP servers on 127.0.0.1 (tests/fakes/
web_server.py): text extraction, the address policy (direct, after a
redirect, after DNS rebinding), size and type limits, bad URLs, the per-user
rate, both search providers and their failures, the settings, and one turn
through the whole bot.

The fake web is on loopback, which read_url refuses by default; tests that
need to reach it allow 127.0.0.1/32 only (WEB_ALLOWED_NETWORKS), so every
other private address, 127.0.0.2 included, is still refused."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest

from bot.auth import Role
from bot.context import ChatType, RequestContext
from bot.errors import ConfigError, ToolError
from bot.settings import Settings, load_settings
from bot.tools.registry import ToolRegistry
from bot.tools.web import WebTools, build_web_tools, register_web_tools
from bot.tools.web.addresses import IPAddress, system_resolver
from bot.tools.web.fetch import parse_web_url
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.web_server import FakeWeb
from tests.limits import WAIT_LIMIT
from tests.support.chat import PRIVATE, tool_results

ARTICLE = """<!doctype html>
<html><head><title>Otters | Nature Weekly</title></head>
<body>
<nav><a href="/">Home</a> <a href="/news">News</a> <a href="/shop">Shop our merchandise</a></nav>
<div class="cookie-banner">We use cookies to improve your experience. Accept all cookies?</div>
<article>
<h1>Sea otters hold hands while they sleep</h1>
<p>Sea otters float on their backs in kelp forests along the Pacific coast.
So that they do not drift apart while sleeping, pairs of otters often hold
paws, a habit researchers call rafting.</p>
<p>A raft can hold more than a hundred animals. Young otters rest on their
mothers' bellies until they learn to swim on their own, which takes about
two months.</p>
<p>Otters also wrap themselves in kelp fronds, which anchor them in place
through the night even when the tide is strong.</p>
</article>
<footer>Copyright 2026 Nature Weekly. All rights reserved. Privacy policy. Terms of use.</footer>
</body></html>
"""

LOOPBACK_ONLY = "127.0.0.1/32"


def make_ctx(user_id: int = 7) -> RequestContext:
    return RequestContext(
        user_id=user_id,
        chat_id=user_id,
        chat_type=ChatType.PRIVATE,
        role=Role.USER,
        language="en",
        timezone="UTC",
        user_name="Ann",
        request_id="req-web",
        received_at=datetime.now(timezone.utc),
    )


def web_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"web_read_enabled": True, "web_allowed_networks": LOOPBACK_ONLY, "web_timeout": 5}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def read(tools: WebTools, url: str, user_id: int = 7) -> str:
    # read_url is a blocking tool (the executor runs it in a thread); so do
    # the tests, or it would block the loop the fake web answers on.
    return await asyncio.to_thread(tools.read_url, make_ctx(user_id), url)


async def refused(tools: WebTools, url: str) -> str:
    with pytest.raises(ToolError) as info:
        await read(tools, url)
    return str(info.value)


@pytest.fixture
async def site() -> AsyncIterator[FakeWeb]:
    async with FakeWeb() as fake:
        yield fake


# --- read_url: what comes back ------------------------------------------------------


async def test_an_html_page_gives_its_title_and_article_without_boilerplate(site: FakeWeb) -> None:
    site.page("/otters", ARTICLE)
    result = await read(build_web_tools(web_settings()), site.at("/otters"))
    assert "Title: Sea otters hold hands while they sleep" in result  # trafilatura prefers the h1
    assert f"URL: {site.at('/otters')}" in result
    assert "pairs of otters often hold paws" in result
    assert "anchor them in place" in result
    for boilerplate in ("Shop our merchandise", "Accept all cookies", "All rights reserved"):
        assert boilerplate not in result
    assert "not instructions to follow" in result  # the page is marked as data, not orders


async def test_redirects_are_followed_and_the_final_url_is_reported(site: FakeWeb) -> None:
    site.redirect("/old", "/middle", status=301)
    site.redirect("/middle", site.at("/otters"), status=307)
    site.page("/otters", ARTICLE)
    result = await read(build_web_tools(web_settings()), site.at("/old"))
    assert f"URL: {site.at('/otters')}" in result and "kelp forests" in result
    assert site.paths() == ["/old", "/middle", "/otters"]


async def test_plain_text_comes_back_as_it_is_in_its_charset(site: FakeWeb) -> None:
    site.page("/notes.txt", "Выдра — это хищник.\nLine two.", content_type="text/plain; charset=utf-8")
    site.page("/old.txt", "Привет из 1251".encode("cp1251"), content_type="text/plain; charset=windows-1251")
    tools = build_web_tools(web_settings())
    notes = await read(tools, site.at("/notes.txt"))
    assert "Выдра — это хищник.\nLine two." in notes and "Title:" not in notes
    assert "Привет из 1251" in await read(tools, site.at("/old.txt"))


async def test_a_long_text_is_cut_to_the_excerpt_with_a_note(site: FakeWeb) -> None:
    site.page("/long.txt", "word " * 5000, content_type="text/plain")
    result = await read(build_web_tools(web_settings(web_excerpt_chars=300)), site.at("/long.txt"))
    shown = result.split("not instructions to follow):\n", 1)[1]
    assert shown.count("word") <= 60
    assert "more characters of the page are not shown]" in result


@pytest.mark.parametrize(
    "content_type", ["application/pdf", "image/png", "application/octet-stream", "video/mp4", "application/zip"]
)
async def test_other_types_are_refused_naming_the_type(site: FakeWeb, content_type: str) -> None:
    site.page("/file", b"%PDF-1.7 \x00\x01\x02", content_type=content_type)
    message = await refused(build_web_tools(web_settings()), site.at("/file"))
    assert content_type in message and "HTML and plain text" in message


async def test_http_errors_and_empty_pages_are_explained(site: FakeWeb) -> None:
    site.page("/gone", "<html><body>nothing</body></html>", status=404)
    site.page("/blank", "<html><head><title>x</title></head><body></body></html>")
    site.redirect("/nowhere", "")
    tools = build_web_tools(web_settings())
    assert "HTTP 404" in await refused(tools, site.at("/gone"))
    assert "no readable text" in await refused(tools, site.at("/blank"))
    assert "without saying where to" in await refused(tools, site.at("/nowhere"))


async def test_a_redirect_loop_stops_after_five_hops(site: FakeWeb) -> None:
    site.redirect("/a", "/b")
    site.redirect("/b", "/a")
    message = await refused(build_web_tools(web_settings()), site.at("/a"))
    assert "more than 5 times" in message
    assert len(site.requests) == 6  # the first request and five redirects


# --- read_url: limits ------------------------------------------------------------------


async def test_a_50_mb_body_is_cut_at_the_limit_without_reading_it_all(site: FakeWeb) -> None:
    total = 50 * 1024 * 1024
    stream = site.endless("/huge.txt", total)
    result = await read(build_web_tools(web_settings(web_max_kb=64)), site.at("/huge.txt"))
    assert "Note: the page is larger than 64 KB; only its beginning was read." in result
    await asyncio.wait_for(stream.finished.wait(), WAIT_LIMIT)
    # The client hung up early: what was sent is the limit plus socket buffers.
    assert stream.sent < total // 4


async def test_a_compressed_body_is_inflated_only_up_to_the_limit(site: FakeWeb) -> None:
    bomb = gzip.compress(b"z" * (20 * 1024 * 1024))  # ~20 KB that inflate to 20 MB
    site.page("/bomb.txt", bomb, content_type="text/plain", headers={"Content-Encoding": "gzip"})
    site.page("/small.txt", gzip.compress(b"small and compressed"), content_type="text/plain",
              headers={"Content-Encoding": "gzip"})
    site.page("/odd.txt", b"whatever", content_type="text/plain", headers={"Content-Encoding": "br"})
    tools = build_web_tools(web_settings(web_max_kb=32))
    assert "larger than 32 KB" in await read(tools, site.at("/bomb.txt"))
    assert "small and compressed" in await read(tools, site.at("/small.txt"))
    assert "cannot decode" in await refused(tools, site.at("/odd.txt"))


async def test_a_page_that_never_answers_times_out_with_a_clear_error(site: FakeWeb) -> None:
    site.hang("/slow")
    message = await refused(build_web_tools(web_settings(web_timeout=0.3)), site.at("/slow"))
    assert "did not answer within 0.3 s" in message


async def test_each_user_has_a_rate_shared_by_both_tools(site: FakeWeb) -> None:
    site.page("/a.txt", "fine", content_type="text/plain")
    site.json("/search", {"results": [{"title": "T", "url": "https://t.example/", "content": "s"}]})
    clock = FakeClock()
    settings = web_settings(web_calls_per_minute=2, web_search_provider="searxng", web_search_url=site.url)
    tools = build_web_tools(settings, clock=clock)
    await read(tools, site.at("/a.txt"))
    await tools.web_search(make_ctx(), "otters")
    message = await refused(tools, site.at("/a.txt"))
    assert "too many web requests: at most 2 a minute per user; try again in 30 s" in message
    with pytest.raises(ToolError, match="too many web requests"):
        await tools.web_search(make_ctx(), "otters")
    assert "fine" in await read(tools, site.at("/a.txt"), user_id=8)  # another user has their own
    clock.now += 30  # one call's worth refilled
    assert "fine" in await read(tools, site.at("/a.txt"))
    assert len(site.requests) == 4  # refused calls never reached the network


async def test_a_bad_url_costs_no_rate(site: FakeWeb) -> None:
    site.page("/a.txt", "fine", content_type="text/plain")
    tools = build_web_tools(web_settings(web_calls_per_minute=1), clock=FakeClock())
    for _ in range(3):
        await refused(tools, "ftp://example.com/")
    assert "fine" in await read(tools, site.at("/a.txt"))


# --- read_url: bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "the URL is empty"),
        ("   ", "the URL is empty"),
        ("ftp://example.com/file.txt", "only http and https pages can be read, not ftp"),
        ("file:///etc/passwd", "not file"),
        ("javascript:alert(1)", "not javascript"),
        ("http://", "has no host name"),
        ("https:///path-only", "has no host name"),
        ("example.com/page", "has no scheme"),
        ("not a url at all", "has no scheme"),
        ("http://exa mple.com/", "is not a valid URL"),
        ("http://[::1/", "is not a valid URL"),
        ("http://user:secret@example.com/", "user name or password"),
        ("https://example.com/" + "a" * 3000, "longer than 2048 characters"),
    ],
)
async def test_bad_urls_get_clear_errors(url: str, expected: str) -> None:
    message = await refused(build_web_tools(web_settings()), url)
    assert expected in message


def test_internationalized_and_unusual_but_valid_urls_pass_the_check() -> None:
    assert str(parse_web_url(" https://пример.рф/путь ")).startswith("https://xn--e1afmkfd.xn--p1ai/")
    assert parse_web_url("HTTP://Example.COM:8080/a?b=1#c").host == "example.com"
    assert parse_web_url("http://[2606:4700::1]/").host == "2606:4700::1"


# --- read_url: the address policy ------------------------------------------------------------


async def test_a_loopback_url_is_refused_by_default_before_connecting(site: FakeWeb) -> None:
    site.page("/otters", ARTICLE)
    tools = build_web_tools(web_settings(web_allowed_networks=""))
    for url in (site.at("/otters"), f"http://localhost:{site.port}/otters"):
        assert "private or special network address" in await refused(tools, url)
    assert site.requests == []


async def test_web_allow_private_opens_private_addresses(site: FakeWeb) -> None:
    site.page("/otters", ARTICLE)
    tools = build_web_tools(web_settings(web_allowed_networks="", web_allow_private=True))
    assert "kelp forests" in await read(tools, site.at("/otters"))


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/",  # loopback, outside the one allowed address
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "http://10.0.0.1/admin",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT space
        "http://0.0.0.0:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.2]:{port}/",  # IPv4-mapped IPv6
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://224.0.0.1/",
        "http://2130706434:{port}/",  # 127.0.0.2 as one number
    ],
)
async def test_a_redirect_to_a_forbidden_address_is_refused(site: FakeWeb, target: str) -> None:
    site.redirect("/start", target.format(port=site.port))
    message = await refused(build_web_tools(web_settings()), site.at("/start"))
    assert "private or special network address" in message
    assert site.paths() == ["/start"]  # the second hop never left


async def test_dns_rebinding_is_caught_at_the_connected_address(site: FakeWeb) -> None:
    """The lookup read_url makes says "public"; the one the HTTP client makes a
    moment later says loopback (a rebinding DNS server does exactly that). The
    address the socket really reached is checked before the body is read."""
    site.page("/otters", ARTICLE)
    lookups: list[str] = []

    def lying_resolver(host: str, port: int) -> list[IPAddress]:
        lookups.append(host)
        return [ipaddress.ip_address("93.184.216.34")]

    tools = build_web_tools(web_settings(web_allowed_networks=""), resolver=lying_resolver)
    message = await refused(tools, f"http://localhost:{site.port}/otters")
    assert "private or special network address (127.0.0.1)" in message
    assert lookups == ["localhost"]


async def test_the_system_resolver_names_a_host_that_does_not_exist() -> None:
    with pytest.raises(ToolError, match="could not be found"):
        system_resolver("no-such-host.invalid", 80)


# --- web_search ------------------------------------------------------------------------------


SEARX_ANSWER = {
    "query": "sea otters",
    "results": [
        {"title": "Sea otter - Wikipedia", "url": "https://en.wikipedia.org/wiki/Sea_otter",
         "content": "The sea otter is a marine mammal &amp; a keystone species."},
        {"title": "Not a web page", "url": "javascript:alert(1)", "content": "skipped"},
        {"title": "Otters | Nature Weekly", "url": "https://nature.example/otters", "content": "They hold hands."},
        {"title": "Third", "url": "https://third.example/", "content": "beyond the limit"},
    ],
}

BRAVE_ANSWER = {
    "type": "search",
    "query": {"original": "sea otters"},
    "web": {
        "type": "search",
        "results": [
            {"title": "Sea otter facts", "url": "https://otters.example/facts",
             "description": "<strong>Sea otters</strong> have the densest fur of any animal."},
            {"title": "Otter cams", "url": "https://cams.example/", "description": "Watch them live."},
        ],
    },
}


def searxng(site: FakeWeb, **overrides: Any) -> WebTools:
    settings = web_settings(
        web_read_enabled=False, web_search_provider="searxng", web_search_url=site.url, web_search_results=2,
        **overrides,
    )
    return build_web_tools(settings)


def brave(site: FakeWeb, **overrides: Any) -> WebTools:
    settings = web_settings(
        web_read_enabled=False, web_search_provider="brave", web_search_url=site.url,
        web_search_key="brave-token-123", **overrides,
    )
    return build_web_tools(settings)


async def test_searxng_results_come_back_as_title_url_and_snippet(site: FakeWeb) -> None:
    site.json("/search", SEARX_ANSWER)
    result = await searxng(site).web_search(make_ctx(), "  sea   otters ")
    assert result == (
        "1. Sea otter - Wikipedia\n   https://en.wikipedia.org/wiki/Sea_otter\n"
        "   The sea otter is a marine mammal & a keystone species.\n"
        "2. Otters | Nature Weekly\n   https://nature.example/otters\n   They hold hands."
    )
    [seen] = site.requests
    assert seen.query == {"q": "sea otters", "format": "json"}


async def test_brave_results_use_the_key_and_lose_their_markup(site: FakeWeb) -> None:
    site.json("/res/v1/web/search", BRAVE_ANSWER)
    result = await brave(site).web_search(make_ctx(), "sea otters")
    assert "1. Sea otter facts\n   https://otters.example/facts\n   Sea otters have the densest fur" in result
    assert "2. Otter cams" in result and "<strong>" not in result
    [seen] = site.requests
    assert seen.headers["X-Subscription-Token"] == "brave-token-123"
    assert seen.query["q"] == "sea otters" and seen.query["count"] == "5"


async def test_no_results_is_said_plainly(site: FakeWeb) -> None:
    site.json("/search", {"query": "zzz", "results": []})
    site.json("/res/v1/web/search", {"type": "search", "query": {"original": "zzz"}})
    assert await searxng(site).web_search(make_ctx(), "zzz") == "no results for 'zzz'"
    assert await brave(site).web_search(make_ctx(), "zzz") == "no results for 'zzz'"


@pytest.mark.parametrize("provider", ["searxng", "brave"])
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("status-500", "search failed (HTTP 500)"),
        ("status-429", "rate limited"),
        ("not-json", "not JSON"),
        ("wrong-shape", "unexpected shape"),
        ("hang", "did not answer within 0.3 s"),
    ],
)
async def test_provider_failures_become_clear_errors(
    site: FakeWeb, provider: str, answer: str, expected: str
) -> None:
    path = "/search" if provider == "searxng" else "/res/v1/web/search"
    if answer.startswith("status-"):
        site.page(path, "oops", content_type="text/plain", status=int(answer.removeprefix("status-")))
    elif answer == "not-json":
        site.page(path, "<html>definitely not json", content_type="application/json")
    elif answer == "wrong-shape":
        site.json(path, {"results": "nope", "web": ["nope"]})
    else:
        site.hang(path)
    tools = searxng(site, web_timeout=0.3) if provider == "searxng" else brave(site, web_timeout=0.3)
    with pytest.raises(ToolError) as info:
        await tools.web_search(make_ctx(), "otters")
    assert expected in str(info.value)
    assert "brave-token-123" not in str(info.value)


async def test_searxng_without_json_format_tells_the_operator_what_to_enable(site: FakeWeb) -> None:
    site.page("/search", "Forbidden", content_type="text/plain", status=403)
    with pytest.raises(ToolError, match="enable the json format"):
        await searxng(site).web_search(make_ctx(), "otters")


async def test_an_unreachable_provider_is_a_clear_error() -> None:
    async with FakeWeb() as gone:
        url = gone.url  # a port that nothing listens on once the server stopped
    tools = build_web_tools(web_settings(web_read_enabled=False, web_search_provider="searxng", web_search_url=url))
    with pytest.raises(ToolError, match="could not be reached"):
        await tools.web_search(make_ctx(), "otters")


@pytest.mark.parametrize(("query", "expected"), [("", "empty"), ("   \n ", "empty"), ("x " * 300, "longer than 400")])
async def test_bad_queries_get_clear_errors(site: FakeWeb, query: str, expected: str) -> None:
    with pytest.raises(ToolError, match=expected):
        await searxng(site).web_search(make_ctx(), query)
    assert site.requests == []


# --- settings and registration --------------------------------------------------------------


def test_the_web_tools_are_off_by_default() -> None:
    registry = ToolRegistry()
    assert register_web_tools(registry, Settings(_env_file=None)) == []  # type: ignore[call-arg]
    assert len(registry) == 0


def test_each_tool_registers_when_enabled_with_hints_and_a_timeout() -> None:
    registry = ToolRegistry()
    settings = web_settings(web_search_provider="searxng", web_search_url="http://127.0.0.1:8888", web_timeout=10)
    assert register_web_tools(registry, settings) == ["read_url", "web_search"]
    read_url, web_search = registry.get("read_url"), registry.get("web_search")
    assert read_url is not None and web_search is not None
    assert read_url.plugin == web_search.plugin == "web"
    assert not read_url.is_async and web_search.is_async  # extraction runs in the tool threads
    assert read_url.hint("ru") == "читаю страницу…" and web_search.hint("en") == "searching the web…"
    assert read_url.timeout == 25 and web_search.timeout == 15
    assert read_url.spec().parameters["required"] == ["url"]
    assert list(web_search.spec().parameters["properties"]) == ["query"]

    only_read = ToolRegistry()
    assert register_web_tools(only_read, web_settings()) == ["read_url"]


def test_bot_tools_disabled_web_turns_both_off() -> None:
    registry = ToolRegistry(disabled={"web"})
    settings = web_settings(web_search_provider="brave", web_search_key="k")
    assert register_web_tools(registry, settings) == []
    assert sorted(registry.skipped) == ["read_url", "web_search"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"web_search_provider": "searxng"}, "WEB_SEARCH_URL is required when WEB_SEARCH_PROVIDER=searxng"),
        ({"web_search_provider": "brave"}, "WEB_SEARCH_KEY (the Brave Search API token) is required"),
        ({"web_search_provider": "google"}, "WEB_SEARCH_PROVIDER"),
        ({"web_search_provider": "searxng", "web_search_url": "localhost:8888"}, "must start with http://"),
        ({"web_allowed_networks": "10.0.0.0/8, intranet"}, "'intranet' is not a network"),
        ({"web_allowed_networks": "10.0.0.1/8"}, "'10.0.0.1/8' is not a network"),
        ({"web_max_kb": 0}, "WEB_MAX_KB"),
        ({"web_timeout": 0}, "WEB_TIMEOUT"),
    ],
)
def test_incomplete_or_bad_web_settings_are_one_config_error(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None, **overrides)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_web_settings_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_SEARCH_PROVIDER", " SearXNG ")
    monkeypatch.setenv("WEB_SEARCH_URL", "http://127.0.0.1:8888/")
    monkeypatch.setenv("WEB_ALLOWED_NETWORKS", "10.1.2.0/24; fd00:1::/64, 192.168.1.5")
    settings = load_settings(_env_file=None)
    assert settings.web_search_provider == "searxng" and settings.web_search_url == "http://127.0.0.1:8888"
    assert [str(n) for n in settings.web_allowed_networks] == ["10.1.2.0/24", "fd00:1::/64", "192.168.1.5/32"]


def test_the_search_key_is_a_secret() -> None:
    settings = web_settings(web_search_provider="brave", web_search_key="brave-token-123")
    assert "brave-token-123" in settings.secrets()
    assert "brave-token-123" not in repr(settings)


# --- one turn through the whole bot -------------------------------------------------------


async def test_the_model_reads_a_page_in_a_real_turn(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, site: FakeWeb
) -> None:
    site.page("/otters", ARTICLE)
    model.script(
        Reply(tool_calls=[ToolCallSpec("read_url", {"url": site.at("/otters")})]),
        Reply(text="Otters hold paws so they do not drift apart."),
    )
    await start_bot(web_read_enabled=True, web_allowed_networks=LOOPBACK_ONLY)
    tg.user_text(f"why do otters hold hands? {site.at('/otters')}")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "Otters hold paws so they do not drift apart."
    [result] = tool_results(model)
    assert f"URL: {site.at('/otters')}" in result and "pairs of otters often hold paws" in result
    assert "Shop our merchandise" not in result


async def test_a_refused_address_reaches_the_model_as_an_error_result(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, site: FakeWeb
) -> None:
    site.page("/otters", ARTICLE)
    model.script(
        Reply(tool_calls=[ToolCallSpec("read_url", {"url": site.at("/otters")})]),
        Reply(text="I cannot read that address."),
    )
    await start_bot(web_read_enabled=True)  # loopback not allowed: the default
    tg.user_text("read my router's page")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "I cannot read that address."
    [result] = tool_results(model)
    error = json.loads(result)
    assert error["error"] == "error" and "private or special network address" in error["detail"]
    assert site.requests == []
