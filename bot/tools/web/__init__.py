"""Built-in web tools, off unless the operator turns them on:

- ``read_url(url)`` (WEB_READ_ENABLED=true): fetches one page, refusing
  private and special addresses (see addresses.py), and returns its main text;
- ``web_search(query)`` (WEB_SEARCH_PROVIDER=searxng|brave): the top results
  of a SearXNG instance or the Brave Search API.

Both belong to the group "web" (BOT_TOOLS_DISABLED=web, /tools) and share one
per-user rate limit (WEB_CALLS_PER_MINUTE)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.errors import ConfigError
from bot.settings import Settings
from bot.tools.registry import ToolRegistry
from bot.tools.web.addresses import AddressPolicy, Resolver, system_resolver
from bot.tools.web.fetch import FetchLimits, PageFetcher
from bot.tools.web.search import BRAVE_URL, BraveSearch, SearchProvider, SearxngSearch
from bot.tools.web.tools import WebCallLimit, WebTools

__all__ = ["WebCallLimit", "WebTools", "build_web_tools", "register_web_tools"]

READ_HINTS = {"en": "reading the page…", "ru": "читаю страницу…"}
SEARCH_HINTS = {"en": "searching the web…", "ru": "ищу в интернете…"}
# Seconds on top of the fetch's own deadline for extracting the text (CPU).
EXTRACTION_SECONDS = 15.0


def search_provider(settings: Settings) -> SearchProvider | None:
    """The configured provider; settings validation has already made sure
    its URL or key is there."""
    provider = settings.web_search_provider
    if provider == "searxng":
        if not settings.web_search_url:
            raise ConfigError("WEB_SEARCH_URL is required when WEB_SEARCH_PROVIDER=searxng")
        return SearxngSearch(settings.web_search_url, timeout=settings.web_timeout)
    if provider == "brave":
        key = settings.web_search_key.get_secret_value() if settings.web_search_key else ""
        if not key:
            raise ConfigError("WEB_SEARCH_KEY is required when WEB_SEARCH_PROVIDER=brave")
        base = settings.web_search_url or BRAVE_URL
        return BraveSearch(key, base_url=base, timeout=settings.web_timeout)
    return None


def build_web_tools(
    settings: Settings, *, resolver: Resolver = system_resolver, clock: Callable[[], float] = time.monotonic
) -> WebTools:
    fetcher = None
    if settings.web_read_enabled:
        fetcher = PageFetcher(
            AddressPolicy.of(settings.web_allow_private, settings.web_allowed_networks),
            FetchLimits(max_bytes=settings.web_max_kb * 1024, timeout=settings.web_timeout),
            resolver=resolver,
        )
    return WebTools(
        WebCallLimit(settings.web_calls_per_minute, clock=clock),
        fetcher=fetcher,
        excerpt_chars=settings.web_excerpt_chars,
        search=search_provider(settings),
        search_results=settings.web_search_results,
    )


def register_web_tools(registry: ToolRegistry, settings: Settings) -> list[str]:
    """Register the web tools the settings enable; the names registered
    (none when both are off, or BOT_TOOLS_DISABLED names them)."""
    if not settings.web_read_enabled and settings.web_search_provider is None:
        return []
    tools = build_web_tools(settings)
    registered = []
    if settings.web_read_enabled:
        registered.append(
            registry.register(
                tools.read_url,
                plugin="web",
                hints=READ_HINTS,
                timeout=settings.web_timeout + EXTRACTION_SECONDS,
            )
        )
    if settings.web_search_provider is not None:
        registered.append(
            registry.register(tools.web_search, plugin="web", hints=SEARCH_HINTS, timeout=settings.web_timeout + 5)
        )
    return [tool.name for tool in registered if tool is not None]
